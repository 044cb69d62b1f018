"""Relabel and render events: the kept result drawn after a run, redrawn for new opacity or hidden classes,
relabelled under new thresholds (the engine's `with_thresholds` on the kept compact scores, no model), and its
class probability maps. Each says "run again" when the result has expired or was evicted."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any, NamedTuple

import gradio as gr
from PIL import Image

from demo.events.common import leave_others, session_id, user_error
from demo.events.segmenting import Downloads
from demo.host import ModelHost
from demo.inputs import parse_rules
from demo.labels import describe_run
from demo.outputs import write_outputs
from demo.sessions import RUN_AGAIN, SessionResult, SessionStore
from demo.views import legend_html, overlay_picture, summary, timings_html
from scclip_core import render

RUN_FAILED = "**The run failed** (see the message in the corner of the page); the previous results were cleared."


class Shown(NamedTuple):
    """A result as first drawn; `point` resets the inside views' picked patch."""

    overlay: Any
    legend: Any
    timings: Any
    summary_file: Any
    hidden: Any
    status: Any
    point: Any
    coco_file: Any


class Redrawn(NamedTuple):
    overlay: Any
    legend: Any
    status: Any


class Relabelled(NamedTuple):
    overlay: Any
    legend: Any
    label_file: Any
    summary_json: Any
    summary_file: Any
    status: Any
    coco_file: Any


class Cleared(NamedTuple):
    """Every result view emptied after a failed run, so nothing stale stays on screen."""

    overlay: None = None
    legend: str = ""
    timings: str = ""
    label_file: None = None
    summary_file: None = None
    summary_json: None = None
    hidden: Any = None
    status: str = RUN_FAILED
    anomaly_click: None = None
    anomaly_figure: None = None
    attention_figure: None = None
    similarity_click: None = None
    similarity_figure: None = None
    patch_message: str = ""
    similarity_message: str = ""
    anomaly_names: str = ""
    similarity_names: str = ""
    heatmap_gallery: tuple[()] = ()
    coco_file: None = None


class RenderEvents:
    """Draw and relabel the visitor's kept result; no model."""

    def __init__(self, host: ModelHost, store: SessionStore) -> None:
        self.host = host
        self.store = store

    def show_result(self, opacity: float, request: gr.Request | None = None) -> Shown:
        """After a run: overlay, legend, timings, the JSON and COCO downloads, a fresh hidden-class chooser, status,
        and the picked point reset."""
        return self._show(session_id(request), opacity, (), "Done")

    def show_shared(self, opacity: float, hidden: Sequence[str] | None, request: gr.Request | None = None) -> Shown:
        """After the run that opening a share link starts: as `show_result`, keeping the shared opacity and hidden
        classes."""
        return self._show(session_id(request), opacity, hidden or (), "Opened from a shared link")

    def _show(self, session: str, opacity: float, hidden: Sequence[str], headline: str) -> Shown:
        kept = self.store.get(session)
        if kept is None:
            return leave_others(Shown, status=RUN_AGAIN)
        segmentation = kept.segmentation
        hideable = [
            name for index, name in enumerate(segmentation.class_names) if index != segmentation.background_index
        ]
        hidden = [name for name in hidden if name in hideable]
        return Shown(
            overlay=overlay_picture(segmentation, opacity, hidden),
            legend=legend_html(segmentation, hidden),
            timings=timings_html(segmentation, kept.timings),
            summary_file=kept.summary_path,
            hidden=gr.update(choices=hideable, value=hidden),
            status=f"**{headline}: {describe_run(segmentation)}.** {kept.timings.line()}."
            " Drag the opacity or threshold, hide classes, or click the overlay to pick a patch for the inside views.",
            point=None,
            coco_file=kept.coco_path,
        )

    def clear_results(self) -> Cleared:
        """After a failed run: the previous results are cleared, so nothing stale stays on screen."""
        return Cleared(hidden=gr.update(choices=[], value=[]))

    def rerender(self, opacity: float, hidden: Sequence[str], request: gr.Request | None = None) -> Redrawn:
        """Opacity or hidden classes changed: redraw from the stored segmentation (no model)."""
        session = self.store.get(session_id(request))
        if session is None:
            return leave_others(Redrawn, status=RUN_AGAIN)
        return Redrawn(
            overlay=overlay_picture(session.segmentation, opacity, hidden),
            legend=legend_html(session.segmentation, hidden),
            status=gr.skip(),
        )

    def _relabel(self, session: SessionResult, prob_threshold: Any, area_threshold: Any) -> SessionResult:
        """The kept result under new thresholds, at the logit scale its scores were made at (a query-less
        background class is added when a threshold needs one), with fresh downloads; no model."""
        rules = parse_rules(prob_threshold, area_threshold, self.host.default_prob_threshold)
        relabelled = session.segmentation.with_thresholds(rules.prob_threshold, rules.area_threshold)
        data = summary(relabelled, session.timings)
        files = write_outputs(relabelled, data, session.input_size)
        return replace(
            session,
            segmentation=relabelled,
            summary=data,
            label_path=files.label_path,
            summary_path=files.summary_path,
            coco_path=files.coco_path,
        )

    @user_error
    def rethreshold(
        self,
        prob_threshold: float,
        area_threshold: float,
        opacity: float,
        hidden: Sequence[str],
        request: gr.Request | None = None,
    ) -> Relabelled:
        """Thresholds changed: relabel from the stored scores (no model), redraw, refresh the downloads."""
        session = self.store.get(session_id(request))
        if session is None:
            return leave_others(Relabelled, status=RUN_AGAIN)
        updated = self._relabel(session, prob_threshold, area_threshold)
        self.store.put(session_id(request), updated)
        return Relabelled(
            overlay=overlay_picture(updated.segmentation, opacity, hidden),
            legend=legend_html(updated.segmentation, hidden),
            label_file=updated.label_path,
            summary_json=updated.summary,
            summary_file=updated.summary_path,
            status=gr.skip(),
            coco_file=updated.coco_path,
        )

    @user_error
    def rethreshold_api(
        self, prob_threshold: float, area_threshold: float = 0.0, request: gr.Request | None = None
    ) -> Downloads:
        """Relabel this session's last segmentation under new thresholds, without the model.

        Returns the label PNG and the summary; when the result is no longer kept, no file and
        `{"expired": true, "message": ...}` saying to run `/segment` again.
        """
        session = self.store.get(session_id(request))
        if session is None:
            return Downloads(None, {"expired": True, "message": RUN_AGAIN.replace("**Segment**", "/segment")})
        updated = self._relabel(session, prob_threshold, area_threshold)
        self.store.put(session_id(request), updated)
        return Downloads(updated.label_path, updated.summary)

    @user_error
    def coco_api(self, request: gr.Request | None = None) -> str:
        """The COCO file of this session's last /segment (or /rethreshold) result: the label PNG's masks as
        compressed RLE, one annotation per class present; an error saying to run /segment again when it is no
        longer kept."""
        session = self.store.get(session_id(request))
        if session is None:
            raise gr.Error(RUN_AGAIN.replace("**Segment**", "/segment"), title="Run again", print_exception=False)
        return session.coco_path

    def heatmaps(self, request: gr.Request | None = None) -> list[tuple[Image.Image, str]] | Any:
        """One blended jet heatmap per class (min-max normalised), in class order."""
        session = self.store.get(session_id(request))
        if session is None:
            return gr.skip()
        segmentation = session.segmentation
        pictures = render.class_heatmaps(segmentation.image, session.scores.probs, segmentation.class_names)
        if segmentation.is_random_weights:
            pictures = [(render.stamp(picture, "UNTRAINED"), caption) for picture, caption in pictures]
        return pictures
