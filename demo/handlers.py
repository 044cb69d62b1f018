"""The functions the page's events call: raw inputs in, engine calls through `demo.host`, pictures out.

A visitor's latest result lives in the server-side `SessionStore` under Gradio's session id; cheap events
(opacity, thresholds, hidden classes, patch clicks) re-render from it without the model, and say "run again"
when it has expired or been evicted.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
from PIL import Image

from demo.host import ON_ZERO_GPU, ModelHost, run_ablation, run_segment
from demo.inputs import (
    TEMPLATE_LABELS,
    RequestSettings,
    image_path,
    load_image,
    parse_rules,
    parse_settings,
    parse_vocabulary,
    probe_image,
)
from demo.memory import release_freed_memory
from demo.sessions import RUN_AGAIN, SESSION_TTL_S, SessionResult, SessionStore, compact, file_digest
from demo.views import (
    COMPARISON_METHODS,
    METHOD_LABELS,
    STAGE_LABELS,
    UNTRAINED_NOTE,
    ablation_views,
    configuration_name,
    describe_run,
    legend_html,
    overlay_picture,
    patch_names_html,
    prune_share_links,
    summary,
    timings_html,
    window_crop,
    write_outputs,
)
from scclip_core import (
    DEFAULT_BACKGROUND_WORDS,
    METHODS,
    InputError,
    ScclipError,
    Stages,
    Variant,
    render,
    vocabulary_preset,
)

LOGGER = logging.getLogger(__name__)
LOCAL_SESSION = "local"
DEFAULT_BACKGROUND = ", ".join(DEFAULT_BACKGROUND_WORDS)
SHARED_IMAGE_GONE = (
    "The image of this shared link is no longer on the server (uploads are kept for "
    f"{SESSION_TTL_S // 60} minutes). Ask for a new link, or upload the image and press Segment."
)


def user_error(error: Exception) -> gr.Error:
    """A gr.Error for the page and for gradio_client. Expected errors (bad input, missing weights) are logged
    as one line; anything else is logged once with its traceback and summarised for the user."""
    if isinstance(error, ScclipError):
        LOGGER.info("refused a request: %s", error)
        return gr.Error(str(error), title="Cannot run", print_exception=False)
    LOGGER.exception("unexpected error in a demo handler")
    return gr.Error(
        f"unexpected {type(error).__name__}: {error}. Try another image or fewer classes.",
        title="Error",
        print_exception=False,
    )


def session_id(request: gr.Request | None) -> str:
    """Gradio's id of the browser tab (or API client) that sent the event."""
    return getattr(request, "session_hash", None) or LOCAL_SESSION


class Handlers:
    """Event functions bound to the one ModelHost and the session store."""

    def __init__(self, host: ModelHost, store: SessionStore | None = None) -> None:
        self.host = host
        self.store = store if store is not None else SessionStore()

    def _progress(self, progress: gr.Progress | None) -> Callable[[float, str], None] | None:
        if progress is None or ON_ZERO_GPU:
            return None
        return lambda fraction, message: progress(fraction, desc=message)

    def _settings(
        self,
        method: Any,
        stage_names: Any,
        detector: Any,
        beta: Any,
        background_words: Any,
        prob_threshold: Any,
        area_threshold: Any,
        templates: Any,
        refine_edges: Any = False,
    ) -> RequestSettings:
        return parse_settings(
            method,
            stage_names,
            detector,
            beta,
            background_words,
            prob_threshold,
            area_threshold,
            templates,
            refine_edges,
            default_prob_threshold=self.host.default_prob_threshold,
        )

    def _run(
        self,
        image: Any,
        classes_text: Any,
        settings: RequestSettings,
        previous: SessionResult | None,
        *,
        trace: bool,
        progress: gr.Progress | None,
    ) -> SessionResult:
        """Validate, then run the engine, which reuses the previous image side when its key matches (the same
        uploaded file is not even decoded again)."""
        path = image_path(image)
        input_size = probe_image(path, self.host.limits)
        vocabulary = parse_vocabulary(classes_text, settings, self.host.limits)
        self.host.segmenter(settings.templates)
        digest = file_digest(path)
        kept = previous.embedding if previous is not None else None
        same_upload = previous is not None and previous.upload_digest == digest
        rgb = kept.image if same_upload else load_image(path, self.host.config.max_input_side)
        embedding, segmentation = run_segment(
            self.host, rgb, kept, vocabulary, settings, trace=trace, progress=self._progress(progress)
        )
        reused = embedding is kept
        if (rgb.shape[1], rgb.shape[0]) != input_size:
            segmentation.notices.append(
                f"processed at {rgb.shape[1]}x{rgb.shape[0]} (this demo's size cap of "
                f"{self.host.config.max_input_side} px); the label PNG is scaled back to the input size "
                f"{input_size[0]}x{input_size[1]}"
            )
        embedding, segmentation, relabeller = compact(embedding, segmentation)
        data = summary(segmentation, reused_image_side=reused)
        label_path, summary_path = write_outputs(segmentation, data, input_size)
        return SessionResult(
            upload_digest=digest,
            embedding=embedding,
            segmentation=segmentation,
            relabeller=relabeller,
            reused_image_side=reused,
            input_size=input_size,
            summary=data,
            label_path=label_path,
            summary_path=summary_path,
        )

    def segment(
        self,
        image: Any,
        classes_text: str,
        background_words: str = DEFAULT_BACKGROUND,
        prob_threshold: float | None = None,
        method: str = "sc-clip",
        stage_names: Sequence[str] | str | None = None,
        detector: str = "lof",
        beta: float = 0.4,
        area_threshold: float = 0.0,
        templates: str = "openai",
        refine_edges: bool = False,
        request: gr.Request = None,
        progress: gr.Progress = gr.Progress(),
    ) -> tuple[str, dict[str, Any]]:
        """Segment an image with a class list.

        One line per argument: Gradio reads these lines as the parameter descriptions of the API page and of
        the MCP tool.

        Args:
            image: the photo (over MCP: an http(s) URL or a data: URI): JPEG, PNG, WebP, GIF, BMP or TIFF, <= 80 MP.
            classes_text: the classes, `;` or a new line between classes, `,` between synonyms: "cat; dog, puppy".
            background_words: comma-separated words of one added "background" class (default: sky, wall...); "": none.
            prob_threshold: 0 to 1; pixels whose best probability is lower go to the background (default 0.15).
            method: sc-clip (default), clip, maskclip, sclip, clearclip or naclip.
            stage_names: SC-CLIP stages to keep on, a list or one comma-separated string; default all five.
            detector: anomaly detector of SC-CLIP: lof (default) or l2norm.
            beta: SC-CLIP's affinity threshold, 0 to 1 (default 0.4).
            area_threshold: 0 to 1; classes covering at most this share of the foreground are dropped (default 0).
            templates: prompt templates: openai (80, as in the paper) or simple (7, faster for long class lists).
            refine_edges: true refines edges with PAMR (10 steps, dilations 8 and 16): sharper, a few seconds slower.

        Returns the label map (palette PNG at the input size, pixel value = index into summary["classes"]) and
        a JSON summary (classes, shares, timings, notices, legend colours, what ran).
        """
        try:
            settings = self._settings(
                method,
                stage_names,
                detector,
                beta,
                background_words,
                prob_threshold,
                area_threshold,
                templates,
                refine_edges,
            )
            previous = self.store.get(session_id(request))
            result = self._run(image, classes_text, settings, previous, trace=True, progress=progress)
        except Exception as error:
            raise user_error(error) from error
        finally:
            release_freed_memory()
        self.store.put(session_id(request), result)
        return result.label_path, result.summary

    def segment_shared(
        self,
        image: Any,
        classes_text: str,
        background_words: str,
        prob_threshold: float | None,
        method: str,
        stage_names: Sequence[str] | str | None,
        detector: str,
        beta: float,
        area_threshold: float,
        templates: str,
        refine_edges: bool,
        request: gr.Request = None,
        progress: gr.Progress = gr.Progress(),
    ) -> tuple[str, dict[str, Any]]:
        """`segment` for a page opened from a share link: the same run, or a message saying the link is too old
        when the shared image is no longer on the server."""
        path = image_path(image)
        if path is not None and not os.path.exists(path):
            LOGGER.info("a share link outlived its image")
            raise gr.Error(SHARED_IMAGE_GONE, title="Cannot run", print_exception=False)
        settings = (background_words, prob_threshold, method, stage_names, detector, beta, area_threshold, templates)
        return self.segment(image, classes_text, *settings, refine_edges, request=request, progress=progress)

    def example_preview(
        self, image: Any, classes_text: str, background_words: str
    ) -> tuple[Image.Image, str, str, str, dict[str, Any], str, str]:
        """For cached examples: the displayed outputs of a default run (no session state, nothing to re-render)."""
        try:
            settings = self._settings(
                "sc-clip", None, "lof", None, background_words, None, 0.0, self.host.config.templates
            )
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

    def show_result(self, opacity: float, request: gr.Request = None) -> tuple[Any, ...]:
        """After a run: overlay, legend, timings, the JSON download, a fresh hidden-class chooser, status, and the
        picked point reset."""
        return self._show(session_id(request), opacity, (), "Done")

    def show_shared(self, opacity: float, hidden: Sequence[str] | None, request: gr.Request = None) -> tuple[Any, ...]:
        """After the run that opening a share link starts: as `show_result`, keeping the shared opacity and hidden
        classes."""
        return self._show(session_id(request), opacity, hidden or (), "Opened from a shared link")

    def _show(self, session: str, opacity: float, hidden: Sequence[str], headline: str) -> tuple[Any, ...]:
        kept = self.store.get(session)
        if kept is None:
            return (*(gr.skip(),) * 5, RUN_AGAIN, gr.skip())
        segmentation = kept.segmentation
        hideable = [
            name for index, name in enumerate(segmentation.class_names) if index != segmentation.background_index
        ]
        hidden = [name for name in hidden if name in hideable]
        return (
            overlay_picture(segmentation, opacity, hidden),
            legend_html(segmentation, hidden),
            timings_html(segmentation, reused_image_side=kept.reused_image_side),
            kept.summary_path,
            gr.update(choices=hideable, value=hidden),
            f"**{headline}: {describe_run(segmentation.method, segmentation.stages, segmentation.pamr_steps)}.** "
            "Drag the opacity or threshold, hide classes, or click the overlay to pick a patch for the inside views.",
            None,
        )

    def open_shared_link(
        self, image: Any, classes_text: str | None, view: str | None, request: gr.Request = None
    ) -> tuple[Any, Any]:
        """On page load. A share link (Gradio's `?deep_link=...`) restores the sharer's inputs and views in this
        page, but this new session keeps no result yet: when the link restored an image and classes, a fresh
        token starts the same run as Segment (same limits, same turns at the model). The shared tab opens too.

        Returns the token and the tab selection; both unchanged for a page opened without a link.
        """
        query = dict(getattr(request, "query_params", None) or {}) if request is not None else {}
        if not query.get("deep_link"):
            return gr.skip(), gr.skip()
        rerun = image_path(image) is not None and bool((classes_text or "").strip())
        tab = gr.Tabs(selected=view) if isinstance(view, str) and view.isidentifier() else gr.skip()
        return (uuid.uuid4().hex if rerun else gr.skip()), tab

    def clear_results(self) -> tuple[Any, ...]:
        """After a failed run: the previous results are cleared, so nothing stale stays on screen."""
        return (
            None,
            "",
            "",
            None,
            None,
            None,
            gr.update(choices=[], value=[]),
            "**The run failed** (see the message in the corner of the page); the previous results were cleared.",
            None,
            None,
            None,
            None,
            None,
            "",
            "",
            "",
            "",
            [],
        )

    def rerender(self, opacity: float, hidden: Sequence[str], request: gr.Request = None) -> tuple[Any, Any, Any]:
        """Opacity or hidden classes changed: redraw from the stored segmentation (no model)."""
        session = self.store.get(session_id(request))
        if session is None:
            return gr.skip(), gr.skip(), RUN_AGAIN
        return (
            overlay_picture(session.segmentation, opacity, hidden),
            legend_html(session.segmentation, hidden),
            gr.skip(),
        )

    def _relabel(self, session: SessionResult, prob_threshold: Any, area_threshold: Any) -> SessionResult:
        """The kept result under new thresholds (a query-less background class is added when a threshold needs
        one), with fresh downloads; no model."""
        segmentation, relabeller = session.segmentation, session.relabeller
        thresholds = parse_rules(prob_threshold, area_threshold, self.host.default_prob_threshold)
        rules = replace(thresholds, logit_scale=segmentation.rules.logit_scale)  # the relabeller's
        names, background = segmentation.class_names, segmentation.background_index
        if background is None and rules.needs_background:
            names, background = [*names, "background"], len(names)
            relabeller = relabeller.with_empty_class()
        relabelled = replace(
            segmentation,
            labels=relabeller.labels(background, rules.prob_threshold, rules.area_threshold),
            class_names=names,
            background_index=background,
            rules=rules,
        )
        data = summary(relabelled, reused_image_side=session.reused_image_side)
        label_path, summary_path = write_outputs(relabelled, data, session.input_size)
        return replace(
            session,
            segmentation=relabelled,
            relabeller=relabeller,
            summary=data,
            label_path=label_path,
            summary_path=summary_path,
        )

    def rethreshold(
        self,
        prob_threshold: float,
        area_threshold: float,
        opacity: float,
        hidden: Sequence[str],
        request: gr.Request = None,
    ) -> tuple[Any, ...]:
        """Thresholds changed: relabel from the stored probabilities (no model), redraw, refresh the downloads.

        Returns overlay, legend, label PNG path, summary, summary JSON path and the status.
        """
        session = self.store.get(session_id(request))
        if session is None:
            return (*(gr.skip(),) * 5, RUN_AGAIN)
        try:
            updated = self._relabel(session, prob_threshold, area_threshold)
        except Exception as error:
            raise user_error(error) from error
        self.store.put(session_id(request), updated)
        return (
            overlay_picture(updated.segmentation, opacity, hidden),
            legend_html(updated.segmentation, hidden),
            updated.label_path,
            updated.summary,
            updated.summary_path,
            gr.skip(),
        )

    def rethreshold_api(
        self, prob_threshold: float, area_threshold: float = 0.0, request: gr.Request = None
    ) -> tuple[str | None, dict[str, Any]]:
        """Relabel this session's last segmentation under new thresholds, without the model.

        Returns the label PNG and the summary; when the result is no longer kept, no file and
        `{"expired": true, "message": ...}` saying to run `/segment` again.
        """
        session = self.store.get(session_id(request))
        if session is None:
            return None, {"expired": True, "message": RUN_AGAIN.replace("**Segment**", "/segment")}
        try:
            updated = self._relabel(session, prob_threshold, area_threshold)
        except Exception as error:
            raise user_error(error) from error
        self.store.put(session_id(request), updated)
        return updated.label_path, updated.summary

    def heatmaps(self, request: gr.Request = None) -> list[tuple[Image.Image, str]] | Any:
        """One blended jet heatmap per class (min-max normalised), in class order."""
        session = self.store.get(session_id(request))
        if session is None:
            return gr.skip()
        segmentation = session.segmentation
        pictures = render.class_heatmaps(segmentation.image, session.relabeller.probs, segmentation.class_names)
        if segmentation.is_random_weights:
            pictures = [(render.stamp(picture, "UNTRAINED"), caption) for picture, caption in pictures]
        return pictures

    def select_point(self, event: gr.SelectData, request: gr.Request = None) -> tuple[int, int] | None:
        """A click on any of the pictures of the image: its (x, y) in image pixels."""
        session = self.store.get(session_id(request))
        if session is None or event.index is None:
            return None
        x, y = (int(value) for value in event.index[:2])
        height, width = session.segmentation.image.shape[:2]
        return int(np.clip(x, 0, width - 1)), int(np.clip(y, 0, height - 1))

    def patch_views(self, point: tuple[int, int] | None, request: gr.Request = None) -> tuple[Any, ...]:
        """The inside views for the picked patch (default: the image centre).

        Returns: anomaly click picture, anomaly overview figure, attention figure, similarity click picture,
        similarity figure, and the same message for both tabs.
        """
        session = self.store.get(session_id(request))
        if session is None:
            return (*(gr.skip(),) * 5, RUN_AGAIN, RUN_AGAIN)
        segmentation = session.segmentation
        trace = segmentation.trace or []
        if not trace:
            message = "No trace for this run: the inside views need a run of the Segment tab."
            return None, None, None, None, None, message, message
        image = segmentation.image
        height, width = image.shape[:2]
        point = point or (width // 2, height // 2)
        boxes = segmentation.window_boxes()
        location = segmentation.locate_patch(*point)
        window, patch, grid = location.window, location.index, segmentation.grid
        crop_trace = trace[window]
        crop = window_crop(image, boxes[window])
        note = UNTRAINED_NOTE if segmentation.is_random_weights else None
        method = METHOD_LABELS.get(segmentation.method, segmentation.method)

        def row(matrix: Any) -> np.ndarray:
            return np.asarray(matrix[patch].float(), dtype=np.float32)

        anomalies = [np.asarray(crop.anomaly_indices).reshape(-1) for crop in trace]
        overview = render.anomaly_figure(
            image,
            boxes,
            anomalies,
            grid,
            window,
            np.asarray(crop_trace.lof_scores, dtype=np.float32),
            np.asarray(crop_trace.token_norms, dtype=np.float32),
            note=note,
        )
        resolved = "anomalies resolved" if crop_trace.anomalies_resolved else "anomalies not resolved"
        attention = render.attention_figure(
            crop,
            row(crop_trace.attention_uncalibrated),
            row(crop_trace.attention_calibrated),
            patch,
            grid,
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
            f"Patch {patch} (row {location.row}, column {location.column}) of window {window + 1}/{len(boxes)} "
            f"at x={point[0]}, y={point[1]}. Click another spot on the image to move it."
        )
        return marked, overview, attention, marked, similarity, message, message

    def patch_names(self, point: tuple[int, int] | None, request: gr.Request = None) -> tuple[Any, Any]:
        """What the picked patch (default: the image centre) looks like in words, after calibration and in
        vanilla CLIP, for both inside-view tabs."""
        session = self.store.get(session_id(request))
        if session is None or not session.embedding.trace:
            return "", ""
        segmentation = session.segmentation
        height, width = segmentation.image.shape[:2]
        own = [name for index, name in enumerate(segmentation.class_names) if index != segmentation.background_index]
        named = self.host.name_patch(session.embedding, point or (width // 2, height // 2), own)
        view = patch_names_html(named, segmentation.method, own, untrained=segmentation.is_random_weights)
        return view, view

    def preset_classes(self, key: str | None) -> Any:
        """The class box's text for a vocabulary preset; 'my classes' leaves the box as it is."""
        if not key:
            return gr.skip()
        try:
            return vocabulary_preset(key).as_text("; ")
        except InputError as error:
            raise user_error(error) from error

    def model_info(self) -> dict[str, Any]:
        """What this server runs and accepts, to choose valid arguments for `segment`: the model and its weights
        (untrained weights make every result meaningless, and `untrained_weights` says so), the methods, SC-CLIP's
        stages, the prompt template sets, the default thresholds and background words, and the per-request limits.

        Returns:
            JSON: model, weights, untrained_weights, methods, stages, templates, default thresholds, limits.
        """
        limits = self.host.limits
        return {
            "model": self.host.model_name,
            "weights": self.host.weights,
            "model_loaded": self.host.model is not None,
            "load_error": self.host.load_error,
            "untrained_weights": self.host.is_random,
            "methods": list(METHODS),
            "stages": list(Stages.names()),
            "templates": dict(TEMPLATE_LABELS),
            "default_prob_threshold": self.host.default_prob_threshold,
            "background_words": list(DEFAULT_BACKGROUND_WORDS),
            "limits": {
                "max_classes": limits.max_classes,
                "max_names": limits.max_names,
                "max_image_megapixels": limits.max_image_pixels / 1e6,
                "processed_long_side": self.host.config.max_input_side,
            },
        }

    def comparison_choices(self, gallery: Sequence[tuple[str, str | None]] | None) -> tuple[Any, Any, Any, str]:
        """After an ablation: both choosers list its configurations; the slider starts with vanilla CLIP on the
        left and full SC-CLIP on the right."""
        captions = [caption or f"configuration {index + 1}" for index, (_, caption) in enumerate(gallery or [])]
        names = [configuration_name(caption) for caption in captions]
        if not names:
            empty = gr.update(choices=[], value=None)
            return empty, empty, None, ""
        choices = [(name, index) for index, name in enumerate(names)]
        before = names.index(METHOD_LABELS["clip"]) if METHOD_LABELS["clip"] in names else 0
        after = 0 if before != 0 else len(names) - 1
        slider, message = self.compare(gallery, before, after)
        return gr.update(choices=choices, value=before), gr.update(choices=choices, value=after), slider, message

    def compare(
        self, gallery: Sequence[tuple[str, str | None]] | None, left: Any, right: Any
    ) -> tuple[tuple[str, str] | None, str]:
        """Two configurations of the ablation in the before/after slider: the gallery's own overlays (preview size,
        as the ablation predicted them), so nothing more is kept on the server for it."""
        items = list(gallery or [])
        if not items:
            return None, "Run the ablation first: the slider compares two of its configurations."
        picked = []
        for value in (left, right):
            index = value if isinstance(value, int) and not isinstance(value, bool) else None
            if index is None or not 0 <= index < len(items):
                return None, "Choose a configuration on each side."
            picked.append(items[index])
        (left_path, left_caption), (right_path, right_caption) = picked
        return (left_path, right_path), f"Left: **{left_caption}**. Right: **{right_caption}**. Drag the handle."

    def forget_old_share_links(self) -> None:
        """On each click on Share: delete the share-link snapshots that outlived their images."""
        prune_share_links(Path(gr.utils.get_upload_folder()) / "deep_links")

    def forget(self, request: gr.Request = None) -> None:
        """The tab was closed: its result is dropped at once."""
        self.store.discard(session_id(request))

    def ablate(
        self,
        image: Any,
        classes_text: str,
        background_words: str = DEFAULT_BACKGROUND,
        prob_threshold: float | None = None,
        detector: str = "lof",
        beta: float = 0.4,
        templates: str = "openai",
        comparisons: Sequence[str] | str | None = None,
        refine_edges: bool = False,
        progress: gr.Progress = gr.Progress(),
    ) -> tuple[list[tuple[Image.Image, str]], dict[str, Any]]:
        """Full SC-CLIP, each stage removed in turn, vanilla CLIP and the chosen comparison methods, side by side,
        all from one pass of the frozen blocks.

        Returns a gallery (overlays captioned with name and pixel agreement with full SC-CLIP) and a table: the
        shared pass's seconds once, then each configuration's own seconds and agreement.
        """
        try:
            base = self._settings(
                "sc-clip", None, detector, beta, background_words, prob_threshold, 0.0, templates, refine_edges
            )
            chosen = (
                [comparisons]
                if isinstance(comparisons, str)
                else list(COMPARISON_METHODS if comparisons is None else comparisons)
            )
            unknown = sorted(set(chosen) - set(COMPARISON_METHODS))
            if unknown:
                raise InputError(f"unknown comparison method(s) {unknown}; choose from {', '.join(COMPARISON_METHODS)}")
            configurations = [("SC-CLIP (full)", Variant("sc-clip", Stages()))]
            configurations += [
                (f"− {STAGE_LABELS[stage]}", Variant("sc-clip", Stages.without(stage))) for stage in Stages.names()
            ]
            configurations += [
                (METHOD_LABELS[method], Variant(method, Stages()))
                for method in ["clip", *[m for m in COMPARISON_METHODS if m in chosen]]
            ]
            path = image_path(image)
            probe_image(path, self.host.limits)
            vocabulary = parse_vocabulary(classes_text, base, self.host.limits)
            rgb = load_image(path, self.host.config.max_input_side)
            shared, runs = run_ablation(
                self.host, rgb, vocabulary, base, configurations, progress=self._progress(progress)
            )
            return ablation_views(shared, runs)
        except Exception as error:
            raise user_error(error) from error
        finally:
            release_freed_memory()
