"""What every method module declares (`MethodSpec`), and the parts of it that are data: its published scores
(`Published`) and its own evaluation protocol (`MethodProtocol`). Free of torch, so the command line can list the
methods before loading a model."""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

from ..config import Method
from ..errors import InputError

if TYPE_CHECKING:
    from collections.abc import Callable

    from torch import Tensor

    from ..config import Variant
    from ..encoder import SharedPass

    LastBlock = Callable[[SharedPass, Variant], "LastBlockOutput"]
    TextPass = Callable[[object, Tensor, Tensor], Tensor]


class LastBlockOutput(NamedTuple):
    """What a method's last block gives the encoder: the patch tokens (B, N, D) before `ln_post`, the patch-to-patch
    attention with heads averaged (B, N, N) when tracing, and, for a method whose image side depends on the class
    text, the state its `text_pass` continues from (None otherwise)."""

    patches: Tensor
    attention: Tensor | None
    state: object = None


PUBLISHED_DATASETS: tuple[str, ...] = (
    "voc21",
    "context60",
    "coco_object",
    "voc20",
    "context59",
    "coco_stuff164k",
    "cityscapes",
    "ade20k",
)
"""The eight benchmarks of the published comparison table, in its column order."""


@dataclass(frozen=True)
class Published:
    """One published row of mIoU (ViT-B/16, OpenAI CLIP), one score per `PUBLISHED_DATASETS` entry.

    `flags` are the extra command-line flags that reproduce this row (NACLIP publishes with and without PAMR),
    `note` says which row it is.
    """

    scores: tuple[float, ...]
    average: float
    flags: str = ""
    note: str = ""


@dataclass(frozen=True)
class MethodProtocol:
    """A comparison method's own evaluation settings: `common` applies to every dataset, then `per_dataset`.

    Both map benchmark field names (`Benchmark.with_overrides`) to values. `common` sets every protocol field,
    so nothing is inherited from SC-CLIP's benchmarks; `source` says where the values were read.
    """

    source: str
    common: Mapping[str, object]
    per_dataset: Mapping[str, Mapping[str, object]] = field(default_factory=dict)

    def changes(self, dataset: str) -> dict[str, object]:
        return {**self.common, **self.per_dataset.get(dataset, {})}

    def extended(
        self,
        source: str,
        common: Mapping[str, object],
        per_dataset: Mapping[str, Mapping[str, object]] | None = None,
    ) -> MethodProtocol:
        """This protocol with some values changed, for a method whose official code is built on this one's (ResCLIP
        and PEARL on NACLIP's): `common` and each dataset's changes are merged over this protocol's."""
        datasets = {**self.per_dataset, **(per_dataset or {})}
        return MethodProtocol(
            source=source,
            common={**self.common, **common},
            per_dataset={
                name: {**self.per_dataset.get(name, {}), **(per_dataset or {}).get(name, {})} for name in datasets
            },
        )


@dataclass(frozen=True)
class MethodSpec:
    """Everything about one method, declared by its module in `scclip_core.methods`.

    `summary` says in one line what its last block does (the documentation's method table); `repository` (GitHub
    owner/name) and `commit` say where its official code lives (None: no repository of
    its own, or no pinned commit), `venue` and `year` where it was published (the registry lists methods by year);
    `last_block` replaces the backbone's last block: from the shared frozen pass and the variant, a
    `LastBlockOutput` (it imports torch when it runs, so that listing methods does not); `settings` names the
    `CalibrationParams` fields the method reads; `params` is the default of its own frozen, validated settings
    dataclass (None: it has none); `stages` says whether SC-CLIP's stage switches apply to it; `ablations` are its
    own ablation as (label, params) pairs; `kept_attention` gives, from its params, the frozen blocks (0-based)
    whose softmax attention maps its last block reads, averaged (`SharedPass.kept_attention`); `text_pass`, for a
    method whose image side depends on the class text, continues from its last block's state, the first pass's
    normalised patch embeddings (B, rows, cols, E) and the query embeddings (Q, E) to the final patch embeddings
    (B, rows, cols, E) before normalisation; `refinements` name the refinements its official code runs on the
    logits by default; `protocol` is its own evaluation protocol (None: SC-CLIP's, the default one);
    `in_default_ablation` says whether the ablation runs it unless asked otherwise (False for a method whose
    cost would take the ablation past twice one segmentation).
    """

    name: Method
    label: str
    summary: str
    repository: str | None
    commit: str | None
    venue: str
    year: int
    last_block: LastBlock
    published: tuple[Published, ...]
    settings: tuple[str, ...] = ()
    params: Hashable = None
    stages: bool = False
    ablations: tuple[tuple[str, Hashable], ...] = ()
    kept_attention: Callable[[Hashable], tuple[int, ...]] | None = None
    text_pass: TextPass | None = None
    refinements: tuple[str, ...] = ()
    protocol: MethodProtocol | None = None
    in_default_ablation: bool = True

    @property
    def text_dependent(self) -> bool:
        """Whether its image side depends on the class text (the image-side cache must not serve it across
        vocabularies)."""
        return self.text_pass is not None

    def checked_params(self, params: Hashable) -> Hashable:
        """`params` checked against the method's settings dataclass (None: its defaults)."""
        if params is None:
            return self.params
        if self.params is None:
            raise InputError(f"{self.label} has no settings of its own, so it takes no params (got {params!r})")
        if type(params) is not type(self.params):
            raise InputError(f"{self.label} takes {type(self.params).__name__} params, not {type(params).__name__}")
        return params

    def params_with(self, assignments: Sequence[str], base: Hashable = None) -> Hashable:
        """`base` (None: the defaults) with `NAME=VALUE` assignments applied, each value read as its field's
        default is typed (a number, on/off, or comma-separated numbers for a tuple); raises InputError naming
        the fields for an unknown one or a bad value."""
        params = self.checked_params(base)
        if not assignments:
            return params
        if params is None or not dataclasses.is_dataclass(params):
            raise InputError(f"{self.label} has no settings of its own to set")
        current = {field.name: getattr(params, field.name) for field in dataclasses.fields(params)}
        changes = {}
        for assignment in assignments:
            name, equals, text = assignment.partition("=")
            name = name.strip().replace("-", "_")
            if not equals or name not in current:
                raise InputError(
                    f"method settings are NAME=VALUE with NAME one of {', '.join(current)} for {self.label}, "
                    f"not {assignment!r}"
                )
            changes[name] = _setting_value(name, text.strip(), current[name])
        return dataclasses.replace(params, **changes)  # type: ignore[type-var]


def settings_json(settings: object) -> object:
    """Settings as JSON-ready data: a settings dataclass as its type's name and fields, anything else as it is."""
    if dataclasses.is_dataclass(settings) and not isinstance(settings, type):
        return {"type": type(settings).__name__, **dataclasses.asdict(settings)}
    return settings


def _setting_value(name: str, text: str, like: object) -> object:
    """`text` read as a value of the type of `like`, a setting's current value."""
    try:
        if isinstance(like, bool):
            return _BOOLEAN_WORDS[text.lower()]
        if isinstance(like, tuple):
            kind: type = type(like[0]) if like else float
            return tuple(kind(part) for part in text.split(","))
        if isinstance(like, (int, float)):
            return type(like)(text)
    except (KeyError, ValueError):
        pass
    raise InputError(f"setting {name} takes a value like {like!r}, not {text!r}")


_BOOLEAN_WORDS = {word: True for word in ("on", "true", "yes", "1")} | {
    word: False for word in ("off", "false", "no", "0")
}
