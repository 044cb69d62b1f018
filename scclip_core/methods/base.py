"""What every method module declares (`MethodSpec`), and the parts of it that are data: its published scores
(`Published`) and its own evaluation protocol (`MethodProtocol`). Free of torch, so the command line can list the
methods before loading a model."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
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


@dataclass(frozen=True)
class MethodSpec:
    """Everything about one method, declared by its module in `scclip_core.methods`.

    `repository` (GitHub owner/name) and `commit` say where its official code lives (None: no repository of
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
    logits by default; `protocol` is its own evaluation protocol (None: SC-CLIP's, the default one).
    """

    name: Method
    label: str
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
