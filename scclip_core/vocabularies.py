"""Ready-made class lists for the demo's vocabulary dropdown, read from the benchmark class files.

Each preset names an evaluation dataset (`scclip_core.eval.presets.PRESETS`), so every list has one source: the
`classes/*.txt` file that the benchmarks use. Presets hold the object classes only; a benchmark's background
class is left out, since the demo adds its own background words.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from .errors import InputError
from .eval.presets import BACKGROUND_NAME, PRESETS

CLASS_SEPARATORS: tuple[str, ...] = ("\n", "; ")
_RESERVED = (",", ";", "\n", "\r")


@dataclass(frozen=True)
class VocabularyPreset:
    """A named class list: `dataset` is the evaluation preset whose class file it reads."""

    key: str
    title: str
    dataset: str

    def __post_init__(self) -> None:
        if self.dataset not in PRESETS:
            raise ValueError(f"{self.key}: unknown dataset {self.dataset!r}; choose one of {', '.join(PRESETS)}")

    @property
    def classes(self) -> tuple[tuple[str, ...], ...]:
        """Synonyms per class in the class file's order, without the background class."""
        preset = PRESETS[self.dataset]
        classes = tuple(
            synonyms
            for index, synonyms in enumerate(preset.queries)
            if index != preset.background_index and synonyms[0].lower() != BACKGROUND_NAME
        )
        for synonyms in classes:
            for name in synonyms:
                if any(mark in name for mark in _RESERVED) or name != " ".join(name.split()):
                    raise ValueError(f"{self.dataset}: class name {name!r} cannot be written in the class-box syntax")
        return classes

    @property
    def names(self) -> tuple[str, ...]:
        """The display name (first synonym) of each class."""
        return tuple(synonyms[0] for synonyms in self.classes)

    @property
    def label(self) -> str:
        """Title and class count, for a dropdown: 'COCO-Stuff (171)'."""
        return f"{self.title} ({len(self.classes)})"

    def as_text(self, separator: str = "\n") -> str:
        """The classes in the class-box syntax of `parse_classes`: `separator` between classes, ', ' between
        synonyms. `separator` is a new line (one class per line) or '; '."""
        if separator not in CLASS_SEPARATORS:
            raise ValueError(f"separator must be one of {list(CLASS_SEPARATORS)}, not {separator!r}")
        return separator.join(", ".join(synonyms) for synonyms in self.classes)


VOCABULARY_PRESETS: tuple[VocabularyPreset, ...] = (
    VocabularyPreset("coco_stuff", "COCO-Stuff", "coco_stuff164k"),
    VocabularyPreset("ade20k", "ADE20K", "ade20k"),
    VocabularyPreset("pascal_context", "Pascal Context", "context59"),
    VocabularyPreset("pascal_voc", "Pascal VOC", "voc20"),
    VocabularyPreset("cityscapes", "Cityscapes", "cityscapes"),
)


def vocabulary_preset(key: str) -> VocabularyPreset:
    """The preset for `key` (any case, dashes or underscores; its dataset's name works too)."""
    wanted = str(key).strip().lower().replace("-", "_").replace(" ", "_")
    for preset in VOCABULARY_PRESETS:
        if wanted in (preset.key, preset.dataset):
            return preset
    raise InputError(
        f"unknown vocabulary preset {key!r}; choose one of {', '.join(preset.key for preset in VOCABULARY_PRESETS)}"
    )


@cache
def builtin_vocabulary() -> tuple[str, ...]:
    """The union of the presets' class names: each class's display name (first synonym), once (compared
    without case), in preset then class order.

    Only display names: the other synonyms are mostly prompt variants ('person in shirt') or near-duplicates
    ('tv monitor', 'monitor') that would crowd a short list of what a patch looks like.
    """
    names: dict[str, str] = {}
    for preset in VOCABULARY_PRESETS:
        for name in preset.names:
            names.setdefault(name.lower(), name)
    return tuple(names.values())


@cache
def preset_queries() -> tuple[str, ...]:
    """Every name the presets use as a text query (synonyms too), once, in preset then class order: what a service
    can embed once at start-up so that picking a preset costs no text encoding."""
    names = (name for preset in VOCABULARY_PRESETS for synonyms in preset.classes for name in synonyms)
    return tuple(dict.fromkeys(names))
