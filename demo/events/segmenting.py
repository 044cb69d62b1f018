"""Segment events: a run of the model on the visitor's image and classes (the public `/segment`), the cached
examples' default run, vocabulary presets, and what the server runs (`/model_info`)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple, TypeVar

import gradio as gr
from PIL import Image

from demo.admission import Admission
from demo.events.common import admitted, progress_reporter, session_id, user_error
from demo.host import ModelHost, run_segment
from demo.inputs import (
    DEFAULT_BETA,
    DEFAULT_DETECTOR,
    DEFAULT_METHOD,
    DEFAULT_TEMPLATES,
    RequestSettings,
    image_path,
    load_image,
    parse_settings,
    parse_vocabulary,
    probe_image,
)
from demo.labels import METHOD_REFINEMENTS, REFINE_CHOICES, TEMPLATE_LABELS, refine_help, refine_labels
from demo.memory import release_freed_memory
from demo.outputs import write_outputs
from demo.sessions import SessionResult, SessionStore, compact, file_digest
from demo.timings import RequestClock
from demo.views import legend_html, overlay_picture, summary, timings_html
from scclip_core import DEFAULT_BACKGROUND_WORDS, Stages, vocabulary_preset
from scclip_core.methods import METHOD_SPECS
from scclip_core.refinements import REFINEMENTS

DEFAULT_BACKGROUND = ", ".join(DEFAULT_BACKGROUND_WORDS)
EXAMPLE_STATUS = (
    "Showing a cached example. Press **Segment** to explore it: opacity, threshold, hiding classes and the "
    "inside views need a live run."
)


Function = TypeVar("Function", bound=Callable[..., Any])


def either(names: Iterable[str]) -> str:
    """Names as a sentence lists alternatives: "a, b or c"."""
    *first, last = names
    return f"{', '.join(first)} or {last}" if first else last


def documented(function: Function) -> Function:
    """Fill the registry's lists into a docstring (Gradio reads its `Args:` lines as the API's and the MCP tool's
    parameter descriptions), so that they name every registered method and refinement."""
    assert function.__doc__ is not None
    function.__doc__ = function.__doc__.format(
        methods=either(f"{name} (default)" if name == DEFAULT_METHOD else name for name in METHOD_SPECS),
        refine_choices=either(REFINE_CHOICES),
        refine_default=METHOD_REFINEMENTS,
        refine_help=refine_help(),
    )
    return function


class Downloads(NamedTuple):
    """What `/segment` and `/rethreshold` return: the label PNG and the JSON summary."""

    label_file: str | None
    summary_json: dict[str, Any]


class ExamplePreview(NamedTuple):
    overlay: Image.Image
    legend: str
    timings: str
    label_file: str
    summary_json: dict[str, Any]
    summary_file: str
    status: str


class SegmentEvents:
    """Runs of the model for one visitor at a time, kept in the session store."""

    def __init__(self, host: ModelHost, store: SessionStore, admission: Admission) -> None:
        self.host = host
        self.store = store
        self.admission = admission

    def settings(self, *values: Any) -> RequestSettings:
        """`parse_settings` with this host's default threshold (0 for untrained weights)."""
        return parse_settings(*values, default_prob_threshold=self.host.default_prob_threshold)

    def run(
        self,
        image: Any,
        classes_text: Any,
        settings: RequestSettings,
        previous: SessionResult | None,
        *,
        trace: bool,
        progress: gr.Progress | None,
        clock: RequestClock,
    ) -> SessionResult:
        """Validate, then run the engine, which reuses the previous image side when its key matches (the same
        uploaded file is not even decoded again); `clock` started when the request's handler did."""
        path = image_path(image)
        input_size = probe_image(path, self.host.limits)
        assert path is not None  # probe_image refuses a missing image
        vocabulary = parse_vocabulary(classes_text, settings, self.host.limits)
        self.host.segmenter(settings.templates)
        digest = file_digest(path)
        kept = previous.embedding if previous is not None else None
        if previous is None or previous.upload_digest != digest:
            rgb = load_image(path, self.host.config.max_input_side)
        else:
            rgb = previous.embedding.image
        embedding, segmentation, model_times = run_segment(
            self.host, rgb, kept, vocabulary, settings, trace=trace, progress=progress_reporter(progress)
        )
        if (rgb.shape[1], rgb.shape[0]) != input_size:
            segmentation.notices.append(
                f"processed at {rgb.shape[1]}x{rgb.shape[0]} (this demo's size cap of "
                f"{self.host.config.max_input_side} px); the label PNG is scaled back to the input size "
                f"{input_size[0]}x{input_size[1]}"
            )
        embedding, segmentation = compact(embedding, segmentation)
        timings = clock.timings(model_times)
        data = summary(segmentation, timings)
        files = write_outputs(segmentation, data, input_size)
        return SessionResult(
            upload_digest=digest,
            embedding=embedding,
            segmentation=segmentation,
            timings=timings,
            input_size=input_size,
            summary=data,
            label_path=files.label_path,
            summary_path=files.summary_path,
            coco_path=files.coco_path,
        )

    @user_error
    @documented
    def segment(
        self,
        image: Any,
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
    ) -> Downloads:
        """Segment an image with a class list.

        One line per argument: Gradio reads these lines as the parameter descriptions of the API page and of
        the MCP tool.

        Args:
            image: the photo (over MCP: an http(s) URL or a data: URI): JPEG, PNG, WebP, GIF, BMP or TIFF, <= 80 MP.
            classes_text: the classes, `;` or a new line between classes, `,` between synonyms: "cat; dog, puppy".
            background_words: comma-separated words of one added "background" class (default: sky, wall...); "": none.
            prob_threshold: 0 to 1; pixels whose best probability is lower go to the background (default 0.15).
            method: {methods}.
            stage_names: SC-CLIP stages to keep on, a list or one comma-separated string; default all five.
            detector: anomaly detector of SC-CLIP: lof (default) or l2norm.
            beta: SC-CLIP's affinity threshold, 0 to 1 (default 0.4).
            area_threshold: 0 to 1; classes covering at most this share of the foreground are dropped (default 0).
            templates: prompt templates: openai (80, as in the paper) or simple (7, faster for long class lists).
            refine: refinement of the logits: {refine_choices} (default {refine_default}): {refine_help}
            refine_edges: the older switch: true is refine="pamr".

        Returns the label map (palette PNG at the input size, pixel value = index into summary["classes"]) and
        a JSON summary (classes, shares, timings, notices, legend colours, what ran).
        """
        clock = RequestClock.start()
        try:
            settings = self.settings(
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
            with admitted(self.admission, request) as waited:
                previous = self.store.get(session_id(request))
                result = self.run(
                    image, classes_text, settings, previous, trace=True, progress=progress, clock=clock.waited(waited)
                )
        finally:
            release_freed_memory()
        self.store.put(session_id(request), result)
        return Downloads(result.label_path, result.summary)

    @user_error
    def example_preview(self, image: Any, classes_text: str, background_words: str) -> ExamplePreview:
        """For cached examples: the displayed outputs of a default run (no session state, nothing to re-render)."""
        settings = self.settings(None, None, None, None, background_words, None, None, self.host.config.templates)
        result = self.run(image, classes_text, settings, None, trace=False, progress=None, clock=RequestClock.start())
        return ExamplePreview(
            overlay=overlay_picture(result.segmentation),
            legend=legend_html(result.segmentation),
            timings=timings_html(result.segmentation, result.timings),
            label_file=result.label_path,
            summary_json=result.summary,
            summary_file=result.summary_path,
            status=EXAMPLE_STATUS,
        )

    @user_error
    def preset_classes(self, key: str | None) -> Any:
        """The class box's text for a vocabulary preset; 'my classes' leaves the box as it is."""
        if not key:
            return gr.skip()
        return vocabulary_preset(key).as_text("; ")

    def model_info(self) -> dict[str, Any]:
        """What this server runs and accepts, to choose valid arguments for `segment`: the model and its weights
        (untrained weights make every result meaningless, and `untrained_weights` says so), the methods, the refine
        choices and where each refinement comes from, SC-CLIP's stages, the prompt template sets, the default
        thresholds and background words, and the per-request limits.

        Returns:
            JSON: model, weights, untrained_weights, methods, refine, refinements, stages, templates, default
            thresholds, limits.
        """
        limits = self.host.limits
        return {
            "model": self.host.model_name,
            "weights": self.host.weights,
            "model_loaded": self.host.model is not None,
            "load_error": self.host.load_error,
            "untrained_weights": self.host.is_random,
            "methods": list(METHOD_SPECS),
            "refine": refine_labels(),
            "refinements": {name: refinement.source for name, refinement in REFINEMENTS.items()},
            "stages": list(Stages.names()),
            "templates": dict(TEMPLATE_LABELS),
            "default_prob_threshold": self.host.default_prob_threshold,
            "background_words": list(DEFAULT_BACKGROUND_WORDS),
            "limits": {
                "max_classes": limits.max_classes,
                "max_names": limits.max_names,
                "full_template_names": limits.full_template_names,
                "max_image_megapixels": limits.max_image_pixels / 1e6,
                "processed_long_side": self.host.config.max_input_side,
                "max_video_seconds": limits.max_video_seconds,
                "max_video_frames": limits.max_video_frames,
                "max_batch_files": limits.max_batch_files,
                "live_side": limits.live_side,
            },
        }

    def forget(self, request: gr.Request | None = None) -> None:
        """The tab was closed: its result is dropped at once."""
        self.store.discard(session_id(request))
