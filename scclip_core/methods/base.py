"""What every method module declares (`MethodSpec`), and the parts of it that are data: its published scores
(`Published`) and its own evaluation protocol (`MethodProtocol`). Free of torch, so the command line can list the
methods before loading a model."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..config import Method

if TYPE_CHECKING:
    from collections.abc import Callable

    from torch import Tensor

    from ..config import Stages
    from ..encoder import SharedPass

    LastBlock = Callable[[SharedPass, Stages], tuple[Tensor, Tensor | None]]

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
    its own, or no pinned commit); `last_block` replaces the backbone's last block: from the shared frozen pass
    and SC-CLIP's stage flags, the patch tokens (B, N, D) before `ln_post` and, when tracing, the patch-to-patch
    attention with heads averaged (it imports torch when it runs, so that listing methods does not);
    `settings` names the `CalibrationParams` fields the method reads;
    `text_dependent` says whether its image side depends on the class text (then the image-side cache must not
    serve it across vocabularies); `protocol` is its own evaluation protocol (None: SC-CLIP's, the default one).
    """

    name: Method
    label: str
    repository: str | None
    commit: str | None
    last_block: LastBlock
    published: tuple[Published, ...]
    settings: tuple[str, ...] = ()
    text_dependent: bool = False
    protocol: MethodProtocol | None = None
