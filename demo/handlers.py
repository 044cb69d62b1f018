"""The functions the interface's events call: engine results in, pictures and plain API outputs out.

The only model is the one `ModelHost` loads at start-up; everything else a handler needs comes in as arguments
(inputs and the session's `SessionResult`), so concurrent users never see each other's data. Handlers use only
the public `scclip_core` API and `scclip_core.render`.
"""

from __future__ import annotations

import html
import json
import logging
import os
import shutil
import tempfile
import time
import uuid
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
from PIL import Image

from scclip_core import (
    DEFAULT_BACKGROUND_WORDS,
    METHODS,
    CalibrationParams,
    ImageEmbedding,
    InputError,
    LoadedModel,
    ScclipError,
    Segmentation,
    Segmenter,
    SegmenterConfig,
    Stages,
    TextEmbeddingCache,
    Vocabulary,
    load_model,
    parse_classes,
    parse_words,
)
from scclip_core import render

from demo.state import ImageSideKey, SessionResult, file_digest

LOGGER = logging.getLogger(__name__)

STAGE_LABELS: dict[str, str] = {
    "anomaly": "anomaly resolution",
    "pre_aggregation": "pre-aggregation",
    "attention_prior": "attention prior",
    "post_aggregation": "post-aggregation",
    "multi_level": "multi-level fusion",
}
METHOD_LABELS: dict[str, str] = {
    "sc-clip": "SC-CLIP",
    "clip": "CLIP (vanilla)",
    "maskclip": "MaskCLIP",
    "sclip": "SCLIP",
    "clearclip": "ClearCLIP",
    "naclip": "NACLIP",
}
COMPARISON_METHODS: tuple[str, ...] = tuple(method for method in METHODS if method not in ("sc-clip", "clip"))
TEMPLATE_LABELS: dict[str, str] = {
    "openai": "80 OpenAI templates (as in the paper)",
    "simple": "7 short templates (faster text for long class lists)",
}
UNTRAINED_NOTE = "UNTRAINED (random) weights: outputs are meaningless"
MAX_IMAGE_PIXELS = 80_000_000
EXIF_ORIENTATION = 0x0112
ROTATED_ORIENTATIONS = (5, 6, 7, 8)
OUTPUT_MAX_AGE_S = 2 * 60 * 60
THUMBNAIL_SIDE = 480


def _gpu(duration: int) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """`spaces.GPU(duration=...)` where the `spaces` package exists (Hugging Face Spaces; it only acts on ZeroGPU
    hardware), a no-op decorator elsewhere."""
    try:
        import spaces  # type: ignore[import-not-found]
    except ImportError:
        return lambda function: function
    return spaces.GPU(duration=duration)


ON_ZERO_GPU = bool(os.environ.get("SPACES_ZERO_GPU"))
DEMO_CONFIG = SegmenterConfig(max_input_side=1280)


@_gpu(duration=120)
def run_engine(
    segmenter: Segmenter,
    image: str | None,
    embedding: ImageEmbedding | None,
    vocabulary: Vocabulary,
    settings: "RunSettings",
    *,
    trace: bool,
    progress: Callable[[float, str], None] | None,
) -> tuple[ImageEmbedding, Segmentation]:
    """The only heavy step (backbone and text encoder): the image side unless `embedding` is given, then predict.

    On ZeroGPU this function alone holds the GPU.
    """
    if embedding is None:
        embedding = segmenter.set_image(
            image,
            method=settings.method,
            stages=settings.stages,
            params=settings.params,
            trace=trace,
            progress=progress,
        )
    segmentation = segmenter.predict(
        vocabulary,
        embedding=embedding,
        prob_threshold=settings.prob_threshold,
        area_threshold=settings.area_threshold,
    )
    return embedding, segmentation


@dataclass(frozen=True)
class RunSettings:
    """The user's choices for one run, validated."""

    method: str
    stages: Stages
    params: CalibrationParams
    background: tuple[str, ...] | None
    prob_threshold: float
    area_threshold: float | None
    templates: str


def parse_settings(
    method: str | None,
    stage_names: Sequence[str] | None,
    detector: str | None,
    beta: float | None,
    background_words: str | None,
    prob_threshold: float | None,
    area_threshold: float | None,
    templates: str | None,
) -> RunSettings:
    """Turn raw widget values into RunSettings, raising InputError with a readable message."""
    method = method or "sc-clip"
    templates = templates or "openai"
    if templates not in TEMPLATE_LABELS:
        raise InputError(f"unknown template set {templates!r}; choose one of {', '.join(TEMPLATE_LABELS)}")
    if method not in METHODS:
        raise InputError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    chosen = set(stage_names if stage_names is not None else Stages.names())
    unknown = sorted(chosen - set(Stages.names()))
    if unknown:
        raise InputError(f"unknown stage(s) {unknown}; stages are {list(Stages.names())}")
    try:
        params = CalibrationParams(beta=float(0.4 if beta is None else beta), detector=detector or "lof")
    except ValueError as error:
        raise InputError(str(error)) from error
    threshold = float(prob_threshold or 0.0)
    if not 0.0 <= threshold <= 1.0:
        raise InputError(f"the background threshold must be between 0 and 1, not {threshold}")
    area = float(area_threshold or 0.0)
    if not 0.0 <= area < 1.0:
        raise InputError(f"the area threshold must be in [0, 1), not {area}")
    return RunSettings(
        method=method,
        stages=Stages(**{name: name in chosen for name in Stages.names()}) if method == "sc-clip" else Stages(),
        params=params,
        background=parse_words(background_words) or None,
        prob_threshold=threshold,
        area_threshold=area or None,
        templates=templates,
    )


def image_path(value: Any) -> str | None:
    """The file path of an image input, whether it arrives raw (a FileData dict) or preprocessed (a str)."""
    if value is None:
        return None
    if isinstance(value, dict):
        return value.get("path")
    return str(value)


def exif_orientation(image: Image.Image) -> int:
    """The EXIF orientation tag (1 = upright); 1 when the file has no readable EXIF."""
    try:
        return int(image.getexif().get(EXIF_ORIENTATION, 1))
    except Exception:
        return 1


def inspect_image(path: str | None) -> tuple[int, int]:
    """The (width, height) an image file shows upright (EXIF orientation applied), read from its header only.

    Fails early, with a message a person understands, on missing, unreadable or enormous images.
    """
    if not path:
        raise InputError("no image: upload, paste or pick an example image first")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
                orientation = exif_orientation(image)
    except FileNotFoundError as error:
        raise InputError("the uploaded image is gone from the server; please upload it again") from error
    except Image.DecompressionBombError as error:
        raise InputError(
            f"the image is too large to open safely ({error}); the limit is {MAX_IMAGE_PIXELS / 1e6:.0f} megapixels. "
            "Please downscale it first."
        ) from error
    except Exception as error:
        raise InputError(
            f"could not read the file as an image ({type(error).__name__}); use a JPEG, PNG, WebP, BMP or TIFF"
        ) from error
    if width * height > MAX_IMAGE_PIXELS:
        raise InputError(
            f"the image is {width}x{height} ({width * height / 1e6:.0f} megapixels); the limit is "
            f"{MAX_IMAGE_PIXELS / 1e6:.0f} megapixels. Please downscale it first."
        )
    if width < 1 or height < 1:
        raise InputError(f"the image has no pixels ({width}x{height})")
    return (height, width) if orientation in ROTATED_ORIENTATIONS else (width, height)


def user_error(error: Exception) -> gr.Error:
    """A gr.Error for the page and for gradio_client: our own errors verbatim, anything else summarised."""
    if isinstance(error, ScclipError):
        return gr.Error(str(error), title="Cannot run")
    LOGGER.exception("unexpected error in a demo handler")
    return gr.Error(f"unexpected {type(error).__name__}: {error}. Try another image or fewer classes.", title="Error")


def output_dir() -> Path:
    """A fresh folder for one run's downloadable files; folders older than OUTPUT_MAX_AGE_S are removed."""
    root = Path(tempfile.gettempdir()) / "scclip-demo-outputs"
    root.mkdir(exist_ok=True)
    cutoff = time.time() - OUTPUT_MAX_AGE_S
    for old in root.iterdir():
        if old.is_dir() and old.stat().st_mtime < cutoff:
            shutil.rmtree(old, ignore_errors=True)
    folder = root / uuid.uuid4().hex
    folder.mkdir()
    return folder


def class_colours(segmentation: Segmentation) -> list[str]:
    """Hex colour per class as in the overlay (the background class is drawn uncoloured, black in the PNG)."""
    colours = [render.hex_colour(rgb) for rgb in render.palette(len(segmentation.class_names))]
    if segmentation.background_index is not None:
        colours[segmentation.background_index] = render.hex_colour(render.BACKGROUND_COLOUR)
    return colours


def summary(segmentation: Segmentation, *, reused_image_side: bool = False) -> dict[str, Any]:
    """The JSON summary: the engine's own plus the legend (index, colour, share) and an untrained-weights flag."""
    data = segmentation.to_json()
    shares = segmentation.shares()
    colours = class_colours(segmentation)
    data["legend"] = [
        {"index": index, "name": name, "colour": colours[index], "share": shares.get(name, 0.0)}
        for index, name in enumerate(segmentation.class_names)
    ]
    data["reused_image_side"] = reused_image_side
    data["untrained_weights"] = segmentation.is_random_weights
    if segmentation.is_random_weights:
        data["warning"] = UNTRAINED_NOTE
    return data


def write_outputs(
    segmentation: Segmentation, data: dict[str, Any], input_size: tuple[int, int]
) -> tuple[str, str]:
    """The label map as a palette PNG (pixel value = class index) at the input's (width, height), and the summary,
    as files. Inputs the engine downscaled get their labels scaled back up (nearest neighbour)."""
    folder = output_dir()
    suffix = "_UNTRAINED" if segmentation.is_random_weights else ""
    label_path = folder / f"scclip_labels{suffix}.png"
    label_map = render.label_map_image(
        segmentation.labels, len(segmentation.class_names), segmentation.background_index
    )
    if label_map.size != input_size:
        label_map = label_map.resize(input_size, Image.Resampling.NEAREST)
    data["label_png_size"] = list(input_size)
    label_map.save(label_path)
    json_path = folder / f"scclip_summary{suffix}.json"
    json_path.write_text(json.dumps(data, indent=2))
    return str(label_path), str(json_path)


def overlay_picture(segmentation: Segmentation, opacity: float, hidden: Sequence[str]) -> Image.Image:
    """The overlay as shown: hidden classes untinted, and stamped when the weights are untrained."""
    hidden_indices = [segmentation.class_names.index(name) for name in hidden if name in segmentation.class_names]
    picture = render.overlay(
        segmentation.image,
        segmentation.labels,
        len(segmentation.class_names),
        opacity=opacity,
        hidden=hidden_indices,
        background_index=segmentation.background_index,
    )
    return render.stamp(picture, UNTRAINED_NOTE) if segmentation.is_random_weights else picture


def legend_html(segmentation: Segmentation, hidden: Sequence[str] = ()) -> str:
    """One entry per class (colour swatch, name, synonyms count-free, share bar), largest share first."""
    shares = segmentation.shares()
    colours = class_colours(segmentation)
    order = sorted(range(len(segmentation.class_names)), key=lambda i: -shares.get(segmentation.class_names[i], 0.0))
    rows = []
    for index in order:
        name = segmentation.class_names[index]
        share = shares.get(name, 0.0)
        is_background = index == segmentation.background_index
        muted = name in hidden
        swatch = (
            "background:repeating-linear-gradient(45deg,#ddd 0 3px,#fff 3px 6px)"
            if is_background
            else f"background:{colours[index]}"
        )
        note = " (left uncoloured)" if is_background else (" (hidden)" if muted else "")
        rows.append(
            f'<div class="legend-entry" data-class="{html.escape(name)}" '
            f'style="display:flex;align-items:center;gap:8px;margin:3px 0;opacity:{0.45 if muted else 1}">'
            f'<span style="{swatch};width:16px;height:16px;border:1px solid #555;border-radius:3px;flex:none"></span>'
            f'<span style="flex:0 0 38%;overflow:hidden;text-overflow:ellipsis;white-space:nowrap">'
            f"{html.escape(name)}{note}</span>"
            f'<span style="flex:1;background:#eee;height:10px;border-radius:5px;overflow:hidden">'
            f'<span style="display:block;width:{100 * share:.1f}%;height:100%;'
            f'background:{colours[index]}"></span></span>'
            f'<span style="flex:0 0 52px;text-align:right;font-variant-numeric:tabular-nums">{100 * share:.1f}%</span>'
            "</div>"
        )
    warning = (
        f'<div style="color:#b91c1c;font-weight:600;margin-bottom:4px">{UNTRAINED_NOTE}</div>'
        if segmentation.is_random_weights
        else ""
    )
    return f'<div id="legend-entries">{warning}{"".join(rows)}</div>'


def timings_html(segmentation: Segmentation, *, reused_image_side: bool) -> str:
    """Seconds per step on one line, plus the notices the engine attached (e.g. downscaling)."""
    steps = " · ".join(
        f"{html.escape(step)} <b>{seconds:.2f}</b> s" for step, seconds in segmentation.timings.items()
    )
    notices = list(segmentation.notices)
    if reused_image_side:
        notices.append("image side reused from the previous run (same image and settings): only the text side "
                       "and post-processing ran")
    notice_html = "".join(f"<li>{html.escape(notice)}</li>" for notice in notices)
    method = METHOD_LABELS.get(segmentation.method, segmentation.method)
    return (
        f"<div id='timings-table' style='font-size:0.9em'><b>{html.escape(method)}</b> on "
        f"{html.escape(segmentation.model_name)}, {segmentation.image.shape[1]}x{segmentation.image.shape[0]} px, "
        f"{len(segmentation.windows)} window(s)<div style='margin-top:4px'>{steps}</div>"
        f"{'<ul style=margin-top:4px>' + notice_html + '</ul>' if notice_html else ''}</div>"
    )


def window_boxes(segmentation: Segmentation) -> list[tuple[int, int, int, int]]:
    """The sliding windows (y0, x0, y1, x1) mapped from the resized image to output-image pixels.

    Windows of small images reach past the image (the engine pads the canvas), so boxes may exceed it.
    """
    height, width = segmentation.image.shape[:2]
    resized_height, resized_width = segmentation.resized_size
    scale_y, scale_x = height / resized_height, width / resized_width
    return [
        (round(y0 * scale_y), round(x0 * scale_x), max(round(y1 * scale_y), round(y0 * scale_y) + 1),
         max(round(x1 * scale_x), round(x0 * scale_x) + 1))
        for y0, x0, y1, x1 in segmentation.windows
    ]


def window_crop(image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """The image under `box`, padded with grey where the box reaches past the image, so the patch grid fits."""
    y0, x0, y1, x1 = box
    crop = np.full((y1 - y0, x1 - x0, 3), 128, dtype=np.uint8)
    inside = image[y0:y1, x0:x1]
    crop[: inside.shape[0], : inside.shape[1]] = inside
    return crop


def locate_patch(
    boxes: Sequence[tuple[int, int, int, int]], grids: Sequence[tuple[int, int]], point: tuple[int, int]
) -> tuple[int, int]:
    """(window index, flat patch index) for a point (x, y): the window containing it whose centre is nearest."""
    x, y = point

    def distance(index: int) -> float:
        y0, x0, y1, x1 = boxes[index]
        inside = y0 <= y < y1 and x0 <= x < x1
        return (0.0 if inside else 1e12) + ((y0 + y1) / 2 - y) ** 2 + ((x0 + x1) / 2 - x) ** 2

    window = min(range(len(boxes)), key=distance)
    y0, x0, y1, x1 = boxes[window]
    rows, cols = grids[window]
    row = int(np.clip((y - y0) * rows // max(1, y1 - y0), 0, rows - 1))
    col = int(np.clip((x - x0) * cols // max(1, x1 - x0), 0, cols - 1))
    return window, row * cols + col


def agreement(labels: np.ndarray, reference: np.ndarray) -> float:
    """Fraction of pixels with the same label."""
    return float(np.mean(labels == reference))


class ModelHost:
    """The process's one model and segmenter, or the reason the weights could not be loaded.

    Loading never raises: the app must start either way and show `banner_html()`; `segmenter()` raises the reason
    as an InputError-like message when someone tries to run.
    """

    def __init__(self, model_name: str, weights: str, *, config: SegmenterConfig | None = None) -> None:
        self.model_name = model_name
        self.weights = weights
        self.config = config or DEMO_CONFIG
        self.model: LoadedModel | None = None
        self._segmenters: dict[str, Segmenter] = {}
        self.load_error: str | None = None
        try:
            self.model = load_model(model_name, weights=weights)
            text_cache = TextEmbeddingCache()
            self._segmenters = {
                templates: Segmenter(self.model, replace(self.config, templates=templates), text_cache=text_cache)
                for templates in TEMPLATE_LABELS
            }
            self._segmenters[self.config.templates].text.embed(DEFAULT_BACKGROUND_WORDS)
        except ScclipError as error:
            self.load_error = str(error)
        except Exception as error:
            LOGGER.exception("loading the model failed")
            self.load_error = f"{type(error).__name__}: {error}"

    @property
    def is_random(self) -> bool:
        return self.model is not None and self.model.is_random

    def segmenter(self, templates: str) -> Segmenter:
        """The shared segmenter for a template set (always called with an explicit embedding), or the load
        failure as an error."""
        if not self._segmenters:
            raise ScclipError(
                f"The model is not available, so nothing can run. Reason: {self.load_error} "
                "Fix: set SCCLIP_WEIGHTS (or --weights) to a pretrained tag that is cached or downloadable, "
                "a local weight file, or 'random' for a smoke test, then restart the app."
            )
        return self._segmenters[templates]

    def banner_html(self) -> str:
        """A coloured banner: the load failure with its fix, the untrained-weights warning, or the model info."""
        style = "padding:10px 14px;border-radius:8px;font-size:0.95em;"
        if self.load_error is not None:
            return (
                f'<div id="banner-error" role="alert" style="{style}background:#fee2e2;border:1px solid #b91c1c;'
                f'color:#7f1d1d"><b>The model could not be loaded</b> ({html.escape(self.model_name)}, weights '
                f"<code>{html.escape(self.weights)}</code>). {html.escape(self.load_error)}<br>"
                "<b>Fix:</b> set <code>SCCLIP_WEIGHTS</code> (or <code>python app.py --weights ...</code>) to an "
                "open_clip pretrained tag that is cached or downloadable, a local weight file, or <code>random</code>"
                " for a smoke test, and restart. Nothing can be segmented until then.</div>"
            )
        assert self.model is not None
        if self.model.is_random:
            return (
                f'<div id="banner-untrained" role="alert" style="{style}background:#fef3c7;border:1px solid #b45309;'
                f'color:#78350f"><b>Untrained weights.</b> {html.escape(self.model.name)} runs with random, untrained '
                "weights: the pipeline works, but every result is meaningless and is marked as such. Set "
                "<code>SCCLIP_WEIGHTS=openai</code> (or <code>--weights openai</code>) for real results.</div>"
            )
        return (
            f'<div id="banner-info" style="{style}background:#ecfdf5;border:1px solid #047857;color:#064e3b">'
            f"Model <b>{html.escape(self.model.name)}</b>, weights {html.escape(self.model.weights)}, "
            f"on {html.escape(str(self.model.device))}. Training-free: no part of CLIP was fine-tuned.</div>"
        )


class Handlers:
    """Event functions bound to the one ModelHost; all per-user data arrives as arguments."""

    def __init__(self, host: ModelHost) -> None:
        self.host = host

    def _progress_callback(self, progress: gr.Progress | None) -> Callable[[float, str], None] | None:
        if progress is None or ON_ZERO_GPU:
            return None
        return lambda fraction, message: progress(fraction, desc=message)

    def _run(
        self,
        image: Any,
        classes_text: str | None,
        settings: RunSettings,
        previous: SessionResult | None,
        *,
        trace: bool,
        progress: gr.Progress | None,
    ) -> SessionResult:
        """Validate, then run the engine, reusing the previous image side when the image and settings match."""
        path = image_path(image)
        input_size = inspect_image(path)
        vocabulary = parse_classes(classes_text or "", background=settings.background)
        segmenter = self.host.segmenter(settings.templates)
        key = ImageSideKey(file_digest(path), settings.method, settings.stages, settings.params)
        reusable = previous is not None and previous.key == key and (previous.embedding.trace is not None or not trace)
        embedding, segmentation = run_engine(
            segmenter,
            path,
            previous.embedding if reusable else None,
            vocabulary,
            settings,
            trace=trace,
            progress=self._progress_callback(progress),
        )
        data = summary(segmentation, reused_image_side=reusable)
        label_path, summary_path = write_outputs(segmentation, data, input_size)
        return SessionResult(key=key, embedding=embedding, segmentation=segmentation, reused_image_side=reusable,
                             input_size=input_size, summary=data, label_path=label_path, summary_path=summary_path)

    def segment(
        self,
        image: Any,
        classes_text: str,
        background_words: str = ", ".join(DEFAULT_BACKGROUND_WORDS),
        prob_threshold: float = 0.15,
        method: str = "sc-clip",
        stage_names: Sequence[str] | None = None,
        detector: str = "lof",
        beta: float = 0.4,
        area_threshold: float = 0.0,
        templates: str = "openai",
        session: SessionResult | None = None,
        progress: gr.Progress = gr.Progress(),
    ) -> tuple[str, dict[str, Any], SessionResult]:
        """The `/segment` endpoint: label PNG path and JSON summary; the full result goes to the session state."""
        try:
            settings = parse_settings(method, stage_names, detector, beta, background_words, prob_threshold,
                                      area_threshold, templates)
            result = self._run(image, classes_text, settings, session, trace=True, progress=progress)
        except Exception as error:
            raise user_error(error) from error
        return result.label_path, result.summary, result

    def example_preview(
        self, image: Any, classes_text: str, background_words: str
    ) -> tuple[Image.Image, str, str, str, dict[str, Any], str, str]:
        """For cached examples: the displayed outputs of a default run (no session state, nothing to re-render)."""
        try:
            settings = parse_settings("sc-clip", None, "lof", 0.4, background_words, 0.15, 0.0,
                                      self.host.config.templates)
            result = self._run(image, classes_text, settings, None, trace=False, progress=None)
        except Exception as error:
            raise user_error(error) from error
        return (
            overlay_picture(result.segmentation, 0.55, ()),
            legend_html(result.segmentation),
            timings_html(result.segmentation, reused_image_side=False),
            result.label_path,
            result.summary,
            result.summary_path,
            "Showing a cached example. Press **Segment** to explore it: opacity, threshold, hiding classes and the "
            "inside views need a live run.",
        )

    def show_result(self, session: SessionResult | None, opacity: float) -> tuple[Any, ...]:
        """After a run: overlay, legend, timings, the JSON download, a fresh hidden-class chooser, status, and the
        picked point reset."""
        if session is None:
            return (gr.skip(),) * 7
        segmentation = session.segmentation
        hideable = [name for index, name in enumerate(segmentation.class_names)
                    if index != segmentation.background_index]
        return (
            overlay_picture(segmentation, opacity, ()),
            legend_html(segmentation),
            timings_html(segmentation, reused_image_side=session.reused_image_side),
            session.summary_path,
            gr.update(choices=hideable, value=[]),
            "Done. Drag the opacity or threshold, hide classes, or click the overlay to pick a patch for the "
            "inside views.",
            None,
        )

    def rerender(self, session: SessionResult | None, opacity: float, hidden: Sequence[str]) -> tuple[Any, Any]:
        """Opacity or hidden classes changed: redraw from the stored segmentation (no model)."""
        if session is None:
            return gr.skip(), gr.skip()
        return overlay_picture(session.segmentation, opacity, hidden), legend_html(session.segmentation, hidden)

    def rethreshold(
        self,
        session: SessionResult | None,
        prob_threshold: float,
        area_threshold: float,
        opacity: float,
        hidden: Sequence[str],
    ) -> tuple[Any, ...]:
        """Thresholds changed: relabel from the stored probabilities (no model), redraw, and refresh the downloads.

        Returns overlay, legend, label PNG path, summary, summary JSON path and the updated session.
        """
        if session is None:
            return (gr.skip(),) * 6
        try:
            segmentation = session.segmentation.with_thresholds(float(prob_threshold), float(area_threshold) or None)
        except Exception as error:
            raise user_error(error) from error
        data = summary(segmentation, reused_image_side=session.reused_image_side)
        label_path, summary_path = write_outputs(segmentation, data, session.input_size)
        updated = replace(session, segmentation=segmentation, summary=data, label_path=label_path,
                          summary_path=summary_path)
        return (
            overlay_picture(segmentation, opacity, hidden),
            legend_html(segmentation, hidden),
            label_path,
            data,
            summary_path,
            updated,
        )

    def heatmaps(self, session: SessionResult | None) -> list[tuple[Image.Image, str]] | Any:
        """One blended jet heatmap per class (min-max normalised), in class order."""
        if session is None:
            return gr.skip()
        segmentation = session.segmentation
        pictures = render.class_heatmaps(segmentation.image, segmentation.probs, segmentation.class_names)
        if segmentation.is_random_weights:
            pictures = [(render.stamp(picture, "UNTRAINED"), caption) for picture, caption in pictures]
        return pictures

    def select_point(self, session: SessionResult | None, event: gr.SelectData) -> tuple[int, int] | None:
        """A click on any of the pictures of the image: its (x, y) in image pixels."""
        if session is None or event.index is None:
            return None
        x, y = (int(value) for value in event.index[:2])
        height, width = session.segmentation.image.shape[:2]
        return int(np.clip(x, 0, width - 1)), int(np.clip(y, 0, height - 1))

    def patch_views(self, session: SessionResult | None, point: tuple[int, int] | None) -> tuple[Any, ...]:
        """The inside views for the picked patch (default: the image centre).

        Returns: anomaly click picture, anomaly overview figure, attention figure, similarity click picture,
        similarity figure, and the same message for both tabs.
        """
        if session is None:
            return (gr.skip(),) * 7
        segmentation = session.segmentation
        trace = segmentation.trace or []
        if not trace:
            message = "No trace for this run: the inside views need a run of the Segment tab."
            return None, None, None, None, None, message, message
        image = segmentation.image
        height, width = image.shape[:2]
        point = point or (width // 2, height // 2)
        boxes = window_boxes(segmentation)
        grids = [tuple(crop.grid) for crop in trace]
        window, patch = locate_patch(boxes, grids, point)
        crop_trace = trace[window]
        grid = grids[window]
        crop = window_crop(image, boxes[window])
        note = UNTRAINED_NOTE if segmentation.is_random_weights else None
        method = METHOD_LABELS.get(segmentation.method, segmentation.method)

        def row(matrix: Any) -> np.ndarray:
            return np.asarray(matrix[patch], dtype=np.float32)

        anomalies = [np.asarray(crop.anomaly_indices).reshape(-1) for crop in trace]
        overview = render.anomaly_figure(
            image, boxes, anomalies, grid, window, np.asarray(crop_trace.lof_scores, dtype=np.float32),
            np.asarray(crop_trace.token_norms, dtype=np.float32), note=note,
        )
        resolved = "anomalies resolved" if crop_trace.anomalies_resolved else "anomalies not resolved"
        attention = render.attention_figure(
            crop, row(crop_trace.attention_uncalibrated), row(crop_trace.attention_calibrated), patch, grid,
            anomalies=anomalies[window],
            titles=("vanilla CLIP last-block attention", f"{method} attention ({resolved})"),
            note=note,
        )
        similarity = render.similarity_figure(
            crop,
            [
                (f"mid layer ({resolved})", row(crop_trace.mid_similarity)),
                ("last layer (vanilla CLIP)", row(crop_trace.last_similarity)),
                (f"after calibration ({method})", row(crop_trace.calibrated_similarity)),
            ],
            patch,
            grid,
            float(crop_trace.beta),
            note=note,
        )
        marked = render.mark_point(image, point, boxes[window])
        message = (
            f"Patch {patch} (row {patch // grid[1]}, column {patch % grid[1]}) of window {window + 1}/{len(boxes)} "
            f"at x={point[0]}, y={point[1]}. Click another spot on the image to move it."
        )
        return marked, overview, attention, marked, similarity, message, message

    def ablate(
        self,
        image: Any,
        classes_text: str,
        background_words: str = ", ".join(DEFAULT_BACKGROUND_WORDS),
        prob_threshold: float = 0.15,
        detector: str = "lof",
        beta: float = 0.4,
        templates: str = "openai",
        comparisons: Sequence[str] | None = None,
        progress: gr.Progress = gr.Progress(),
    ) -> tuple[list[tuple[Image.Image, str]], dict[str, Any]]:
        """Full SC-CLIP, each stage removed in turn, vanilla CLIP and the chosen comparison methods, side by side.

        Returns a gallery (overlay thumbnails captioned with time and agreement) and a table.
        """
        try:
            base = parse_settings("sc-clip", None, detector, beta, background_words, prob_threshold, 0.0, templates)
            configurations: list[tuple[str, RunSettings]] = [("SC-CLIP (full)", base)]
            for stage in Stages.names():
                configurations.append(
                    (f"SC-CLIP without {STAGE_LABELS[stage]}",
                     replace(base, stages=Stages.without(stage)))
                )
            chosen = list(comparisons if comparisons is not None else COMPARISON_METHODS)
            unknown = sorted(set(chosen) - set(METHODS))
            if unknown:
                raise InputError(f"unknown comparison method(s) {unknown}; choose from {', '.join(METHODS)}")
            for method in ["clip", *[m for m in chosen if m not in ("clip", "sc-clip")]]:
                configurations.append((METHOD_LABELS[method], replace(base, method=method, stages=Stages())))

            path = image_path(image)
            inspect_image(path)
            vocabulary = parse_classes(classes_text or "", background=base.background)
            segmenter = self.host.segmenter(templates)
            gallery: list[tuple[Image.Image, str]] = []
            rows: list[list[Any]] = []
            reference: np.ndarray | None = None
            for index, (name, settings) in enumerate(configurations):
                progress(index / len(configurations), desc=f"{name} ({index + 1}/{len(configurations)})")
                started = time.perf_counter()
                _, segmentation = run_engine(segmenter, path, None, vocabulary, settings, trace=False, progress=None)
                seconds = time.perf_counter() - started
                if reference is None:
                    reference = segmentation.labels
                same = agreement(segmentation.labels, reference)
                thumbnail = overlay_picture(segmentation, 0.6, ())
                thumbnail.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
                gallery.append((thumbnail, f"{name} · {seconds:.2f} s · {100 * same:.1f}% agreement"))
                off = [STAGE_LABELS[s] for s in Stages.names() if not getattr(settings.stages, s)]
                rows.append([
                    name,
                    METHOD_LABELS[settings.method],
                    ", ".join(off) if settings.method == "sc-clip" and off else "",
                    round(seconds, 3),
                    round(100 * same, 2),
                ])
        except Exception as error:
            raise user_error(error) from error
        table = {
            "headers": ["configuration", "method", "stages off", "time (s)", "pixel agreement with full SC-CLIP (%)"],
            "data": rows,
        }
        return gallery, table
