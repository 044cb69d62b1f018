"""The ablation's configurations, from the engine's one list (`ablation_variants`), and what each one gives back."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from demo.labels import COMPARISON_METHODS, DEFAULT_COMPARISONS, SCCLIP, VANILLA, variant_label
from scclip_core import InputError, Segmentation, Variant, ablation_variants


@dataclass(frozen=True)
class AblationRun:
    """One configuration of an ablation: its segmentation and the seconds of work that were its own."""

    variant: Variant
    segmentation: Segmentation
    own_seconds: float

    @property
    def name(self) -> str:
        return variant_label(self.variant)


def chosen_methods(comparisons: Sequence[str] | str | None) -> list[str]:
    """The comparison methods asked for (one name, a list, or None for the default set), refusing unknown ones."""
    chosen: list[str]
    if comparisons is None:
        chosen = list(DEFAULT_COMPARISONS)
    else:
        chosen = [comparisons] if isinstance(comparisons, str) else list(comparisons)
    unknown = sorted(set(chosen) - set(COMPARISON_METHODS))
    if unknown:
        raise InputError(f"unknown comparison method(s) {unknown}; choose from {', '.join(COMPARISON_METHODS)}")
    return chosen


def ablation_configurations(comparisons: Sequence[str] | str | None) -> list[Variant]:
    """Full SC-CLIP, each stage off in turn, vanilla CLIP and the chosen comparison methods, each followed by its own
    ablation (ResCLIP: RCS off, SFR off), in the engine's order (`ablation_variants`)."""
    kept = {SCCLIP, VANILLA, *chosen_methods(comparisons)}
    return [variant for variant in ablation_variants() if variant.method in kept]
