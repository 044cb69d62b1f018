"""Ablation and compare events: every configuration side by side from one shared pass of the frozen blocks
(`/ablation`), then two of them in the before/after slider, read from the gallery's own files."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import gradio as gr
from PIL import Image

from demo.ablation import ablation_configurations
from demo.events.common import admitted, progress_reporter, user_error
from demo.events.segmenting import DEFAULT_BACKGROUND, SegmentEvents
from demo.host import run_ablation
from demo.inputs import (
    DEFAULT_BETA,
    DEFAULT_DETECTOR,
    DEFAULT_TEMPLATES,
    image_path,
    load_image,
    parse_vocabulary,
    probe_image,
)
from demo.labels import METHOD_REFINEMENTS, VANILLA, method_label
from demo.memory import release_freed_memory
from demo.views import ablation_views, configuration_name

PICK_TWO = "Choose a configuration on each side."
RUN_FIRST = "Run the ablation first: the slider compares two of its configurations."
Gallery = Sequence[tuple[str, str | None]]


class Ablation(NamedTuple):
    ablation_gallery: list[tuple[Image.Image, str]]
    ablation_table: dict[str, Any]


class Compared(NamedTuple):
    compare_slider: tuple[str, str] | None
    compare_message: str


class Choices(NamedTuple):
    """Both choosers of the slider, and the slider with its message."""

    compare_left: Any
    compare_right: Any
    compare_slider: tuple[str, str] | None
    compare_message: str


class CompareEvents:
    """The ablation runs like a segmentation (same validation and turns at the model) but keeps nothing."""

    def __init__(self, segmenting: SegmentEvents) -> None:
        self.segmenting = segmenting

    @user_error
    def ablate(
        self,
        image: Any,
        classes_text: str,
        background_words: str = DEFAULT_BACKGROUND,
        prob_threshold: float | None = None,
        detector: str = DEFAULT_DETECTOR,
        beta: float = DEFAULT_BETA,
        templates: str = DEFAULT_TEMPLATES,
        comparisons: Sequence[str] | str | None = None,
        refine: str = METHOD_REFINEMENTS,
        refine_edges: bool = False,
        request: gr.Request | None = None,
        progress: gr.Progress = gr.Progress(),
    ) -> Ablation:
        """Full SC-CLIP, each stage removed in turn, vanilla CLIP and the chosen comparison methods (each with its own
        ablation, if its module declares one), side by side, all from one pass of the frozen blocks; every
        configuration takes the same refine choice (the default: each method's own refinements).

        Returns a gallery (overlays captioned with name and pixel agreement with full SC-CLIP) and a table: the
        shared pass's seconds once, then each configuration's own seconds and agreement.
        """
        host = self.segmenting.host
        admission = self.segmenting.admission
        try:
            base = self.segmenting.settings(
                None, None, detector, beta, background_words, prob_threshold, None, templates, refine_edges, refine
            )
            configurations = ablation_configurations(comparisons)
            path = image_path(image)
            probe_image(path, host.limits)
            assert path is not None  # probe_image refuses a missing image
            vocabulary = parse_vocabulary(classes_text, base, host.limits)
            with admitted(admission, request):
                rgb = load_image(path, host.config.max_input_side)
                shared, runs = run_ablation(
                    host, rgb, vocabulary, base, configurations, progress=progress_reporter(progress)
                )
            return Ablation(*ablation_views(shared, runs))
        finally:
            release_freed_memory()

    def comparison_choices(self, gallery: Gallery | None) -> Choices:
        """After an ablation: both choosers list its configurations; the slider starts with vanilla CLIP on the
        left and full SC-CLIP on the right."""
        captions = [caption or f"configuration {index + 1}" for index, (_, caption) in enumerate(gallery or [])]
        names = [configuration_name(caption) for caption in captions]
        if not names:
            empty = gr.update(choices=[], value=None)
            return Choices(empty, empty, None, "")
        choices = [(name, index) for index, name in enumerate(names)]
        vanilla = method_label(VANILLA)
        before = names.index(vanilla) if vanilla in names else 0
        after = 0 if before != 0 else len(names) - 1
        slider, message = self.compare(gallery, before, after)
        return Choices(
            gr.update(choices=choices, value=before), gr.update(choices=choices, value=after), slider, message
        )

    def compare(self, gallery: Gallery | None, left: Any, right: Any) -> Compared:
        """Two configurations of the ablation in the before/after slider: the gallery's own overlays (preview size,
        as the ablation predicted them), so nothing more is kept on the server for it."""
        items = list(gallery or [])
        if not items:
            return Compared(None, RUN_FIRST)
        picked = []
        for value in (left, right):
            index = value if isinstance(value, int) and not isinstance(value, bool) else None
            if index is None or not 0 <= index < len(items):
                return Compared(None, PICK_TWO)
            picked.append(items[index])
        (left_path, left_caption), (right_path, right_caption) = picked
        return Compared(
            (left_path, right_path), f"Left: **{left_caption}**. Right: **{right_caption}**. Drag the handle."
        )
