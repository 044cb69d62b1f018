"""Make COCO-Object label maps from COCO-Stuff164k ones: `python -m scclip_core.eval.coco_object <root>`.

COCO-Object (GroupViT's benchmark) is background + the 80 COCO things. From MMSegmentation's
`*_labelTrainIds.png` (things 0-79, stuff 80-170, 255 unlabelled), thing t becomes t + 1 and everything else,
unlabelled included, becomes background 0: the same maps as GroupViT's conversion of the raw stuffthingmaps.
The `*_instanceTrainIds.png` files are written next to the originals, so the COCO-Stuff164k root then serves
as the COCO-Object root too.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

import numpy as np
from PIL import Image

from .datasets import LAYOUTS, DatasetLayoutError, resolve_root

THING_CLASSES = 80


def object_labels(stuff_train_ids: np.ndarray) -> np.ndarray:
    """COCO-Object labels (uint8, 0 = background, 1-80 = things) from COCO-Stuff train ids."""
    things = stuff_train_ids < THING_CLASSES
    return np.where(things, stuff_train_ids + 1, 0).astype(np.uint8)


def convert(root: str | os.PathLike[str], split: str = "val2017") -> int:
    """Write `<id>_instanceTrainIds.png` beside every `<id>_labelTrainIds.png` of `split`; returns the count."""
    stuff = LAYOUTS["coco_stuff164k"]
    annotations = resolve_root(stuff, root) / "annotations" / split
    sources = sorted(annotations.glob(f"*{stuff.label_suffix}"))
    if not sources:
        raise DatasetLayoutError(f"no *{stuff.label_suffix} files in {annotations}; prepare COCO-Stuff164k first")
    target_suffix = LAYOUTS["coco_object"].label_suffix
    for source in sources:
        with Image.open(source) as image:
            labels = object_labels(np.asarray(image).astype(np.int64))
        target = source.with_name(source.name[: -len(stuff.label_suffix)] + target_suffix)
        Image.fromarray(labels, mode="L").save(target)
    return len(sources)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scclip_core.eval.coco_object", description=__doc__.split("\n")[0])
    parser.add_argument("root", help="the COCO-Stuff164k root (holding images/ and annotations/)")
    parser.add_argument("--split", default="val2017", help="annotation folder to convert (default val2017)")
    args = parser.parse_args(argv)
    try:
        count = convert(args.root, args.split)
    except DatasetLayoutError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {count} COCO-Object label maps; evaluate with --dataset coco_object --root {args.root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
