"""Batch events: several images segmented with the same classes and settings (the `/segment_batch` API), each as
`/segment` would, with a gallery of overlays, a table of class shares and one zip of label maps, JSON summaries and
one COCO file. A bad file is reported in its row; the others still run."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import gradio as gr
import numpy as np
from PIL import Image

from demo.events.common import admitted, progress_reporter, user_error
from demo.events.segmenting import DEFAULT_BACKGROUND, SegmentEvents
from demo.host import run_segment
from demo.inputs import (
    DEFAULT_BETA,
    DEFAULT_DETECTOR,
    DEFAULT_METHOD,
    DEFAULT_TEMPLATES,
    image_path,
    load_image,
    parse_vocabulary,
    probe_image,
)
from demo.labels import METHOD_REFINEMENTS
from demo.memory import release_freed_memory
from demo.outputs import coco_of, input_label_map, png_bytes, untrained_suffix, write_zip
from demo.timings import RequestClock
from demo.views import overlay_picture, summary
from scclip_core import InputError, ScclipError
from scclip_core.coco import CocoFile

BATCH_COCO = "coco.json in this zip: one COCO file for the whole batch, one `images` entry per segmented file"
SEGMENTED = "segmented"


class Batch(NamedTuple):
    """What a batch fills: the overlays (captioned with the file names), the shares table, the zip and a line."""

    batch_gallery: list[tuple[Image.Image, str]]
    batch_table: dict[str, Any]
    batch_zip: str | None
    batch_status: str


def file_name(value: Any, position: int) -> str:
    """The name the visitor's file had (an upload keeps it as `orig_name`), else its name on the server."""
    if isinstance(value, dict) and value.get("orig_name"):
        return Path(str(value["orig_name"])).name
    path = image_path(value)
    return Path(path).name if path else f"file {position}"


class BatchEvents:
    """Batches of images, each image as `/segment` runs it (`SegmentEvents.settings`, `probe_image`, `load_image`,
    `run_segment`), under one admission for the whole batch and its own turns at the model per image."""

    def __init__(self, segmenting: SegmentEvents) -> None:
        self.segmenting = segmenting
        self.host = segmenting.host

    @user_error
    def segment_batch(
        self,
        files: Sequence[Any] | None,
        classes_text: str,
        background_words: str = DEFAULT_BACKGROUND,
        prob_threshold: float | None = None,
        method: str = DEFAULT_METHOD,
        stage_names: Sequence[str] | str | None = None,
        detector: str = DEFAULT_DETECTOR,
        beta: float = DEFAULT_BETA,
        area_threshold: float = 0.0,
        templates: str = DEFAULT_TEMPLATES,
        refine: str = METHOD_REFINEMENTS,
        refine_edges: bool = False,
        request: gr.Request | None = None,
        progress: gr.Progress = gr.Progress(),
    ) -> Batch:
        """Segment several images with one class list, each as /segment does.

        Args:
            files: the images (at most the batch limit of /model_info per request).
            classes_text: the classes, `;` or a new line between classes, `,` between synonyms.
            background_words: comma-separated words of one added "background" class; "": none.
            prob_threshold: 0 to 1; pixels whose best probability is lower go to the background.
            method: the method, as for /segment.
            stage_names: SC-CLIP stages to keep on; default all five.
            detector: anomaly detector of SC-CLIP: lof or l2norm.
            beta: SC-CLIP's affinity threshold, 0 to 1.
            area_threshold: 0 to 1; classes covering at most this share of the foreground are dropped.
            templates: prompt templates: openai or simple.
            refine: refinement of the logits, as for /segment.
            refine_edges: the older switch: true is refine="pamr".

        Returns the overlays captioned with the file names, a table (one row per file: each class's share in %,
        and a status saying why a bad file was not segmented), one zip (per image its label PNG and JSON summary,
        and one COCO file for the batch) and a line saying how many were segmented.
        """
        files = list(files or [])
        limit = self.host.limits.max_batch_files
        if not files:
            raise InputError("no images: add one or more image files to the batch first")
        if len(files) > limit:
            raise InputError(
                f"{len(files)} files given; this demo takes at most {limit} images per batch request, so that other "
                "visitors are not kept waiting. Split the batch, or run the command-line tool on a folder."
            )
        settings = self.segmenting.settings(
            method,
            stage_names,
            detector,
            beta,
            background_words,
            prob_threshold,
            area_threshold,
            templates,
            refine_edges,
            refine,
        )
        vocabulary = parse_vocabulary(classes_text, settings, self.host.limits)
        self.host.segmenter(settings.templates)
        gallery: list[tuple[Image.Image, str]] = []
        rows: list[tuple[str, dict[str, float] | None, str]] = []
        members: dict[str, bytes] = {}
        coco: CocoFile | None = None
        report = progress_reporter(progress)
        try:
            with admitted(self.segmenting.admission, request):
                for position, value in enumerate(files, start=1):
                    name = file_name(value, position)
                    if report:
                        report((position - 1) / len(files), f"image {position}/{len(files)}")
                    clock = RequestClock.start()
                    try:
                        path = image_path(value)
                        input_size = probe_image(path, self.host.limits)
                        assert path is not None  # probe_image refuses a missing image
                        rgb = load_image(path, self.host.config.max_input_side)
                        _, segmentation, model_times = run_segment(
                            self.host, rgb, None, vocabulary, settings, trace=False, progress=None
                        )
                    except ScclipError as error:
                        rows.append((name, None, str(error)))
                        continue
                    label_map = input_label_map(segmentation, input_size)
                    coco = coco if coco is not None else coco_of(segmentation)
                    coco.add(np.asarray(label_map), name)
                    data = summary(segmentation, clock.timings(model_times))
                    data.update(file_name=name, label_png_size=list(input_size), coco=BATCH_COCO)
                    stem = f"{position:02d}_{Path(name).stem}"
                    members[f"{stem}_labels.png"] = png_bytes(label_map)
                    members[f"{stem}_summary.json"] = json.dumps(data, indent=2).encode()
                    gallery.append((overlay_picture(segmentation), name))
                    rows.append((name, segmentation.shares(), SEGMENTED))
        finally:
            release_freed_memory()
        class_names = list(coco.class_names) if coco is not None else list(vocabulary.names)
        zip_path = None
        if coco is not None:
            members["coco.json"] = json.dumps(coco.to_dict()).encode()
            zip_path = write_zip(f"scclip_batch{untrained_suffix(self.host.is_random)}.zip", members)
        done = sum(status == SEGMENTED for _, _, status in rows)
        return Batch(
            batch_gallery=gallery,
            batch_table=shares_table(rows, class_names),
            batch_zip=zip_path,
            batch_status=f"**{done} of {len(files)} images segmented.**"
            + ("" if done == len(files) else " The table says why the others were not."),
        )


def shares_table(rows: Sequence[tuple[str, dict[str, float] | None, str]], class_names: Sequence[str]) -> dict:
    """One row per file: its name, each class's share of the image in % (empty for a file not segmented), status."""
    data = [
        [name, *(None if shares is None else round(100 * shares.get(cls, 0.0), 2) for cls in class_names), status]
        for name, shares, status in rows
    ]
    return {"headers": ["file", *(f"{cls} (%)" for cls in class_names), "status"], "data": data}
