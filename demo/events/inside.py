"""Inside-view events: a click picks a patch, then the anomaly, attention and similarity views of that patch and
what it looks like in words, before and after calibration."""

from __future__ import annotations

from typing import Any, NamedTuple

import gradio as gr
import numpy as np

from demo.events.common import leave_others, session_id
from demo.host import ModelHost
from demo.labels import method_label
from demo.sessions import RUN_AGAIN, SessionStore
from demo.views import UNTRAINED_NOTE, patch_names_html, window_crop
from scclip_core import render

NO_TRACE = "No trace for this run: the inside views need a run of the Segment tab."


class PatchViews(NamedTuple):
    """The picked patch in both inside-view tabs, with the same message in each."""

    anomaly_click: Any
    anomaly_figure: Any
    attention_figure: Any
    similarity_click: Any
    similarity_figure: Any
    patch_message: Any
    similarity_message: Any


class PatchNames(NamedTuple):
    anomaly_names: str
    similarity_names: str


class InsideEvents:
    """The inside views of the visitor's kept result (its float16 trace)."""

    def __init__(self, host: ModelHost, store: SessionStore) -> None:
        self.host = host
        self.store = store

    def select_point(self, event: gr.SelectData, request: gr.Request | None = None) -> tuple[int, int] | None:
        """A click on any of the pictures of the image: its (x, y) in image pixels."""
        session = self.store.get(session_id(request))
        if session is None or event.index is None:
            return None
        x, y = (int(value) for value in event.index[:2])
        height, width = session.segmentation.image.shape[:2]
        return int(np.clip(x, 0, width - 1)), int(np.clip(y, 0, height - 1))

    def patch_views(self, point: tuple[int, int] | None, request: gr.Request | None = None) -> PatchViews:
        """The inside views for the picked patch (default: the image centre)."""
        session = self.store.get(session_id(request))
        if session is None:
            return leave_others(PatchViews, patch_message=RUN_AGAIN, similarity_message=RUN_AGAIN)
        segmentation = session.segmentation
        trace = segmentation.trace or []
        if not trace:
            return PatchViews(None, None, None, None, None, NO_TRACE, NO_TRACE)
        image = segmentation.image
        height, width = image.shape[:2]
        point = point or (width // 2, height // 2)
        boxes = segmentation.window_boxes()
        location = segmentation.locate_patch(*point)
        window, patch, grid = location.window, location.index, segmentation.grid
        crop_trace = trace[window]
        crop = window_crop(image, boxes[window])
        note = UNTRAINED_NOTE if segmentation.is_random_weights else None
        method = method_label(segmentation.method)

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
        return PatchViews(
            anomaly_click=marked,
            anomaly_figure=overview,
            attention_figure=attention,
            similarity_click=marked,
            similarity_figure=similarity,
            patch_message=message,
            similarity_message=message,
        )

    def patch_names(self, point: tuple[int, int] | None, request: gr.Request | None = None) -> PatchNames:
        """What the picked patch (default: the image centre) looks like in words, after calibration and in
        vanilla CLIP, for both inside-view tabs."""
        session = self.store.get(session_id(request))
        if session is None or not session.embedding.trace:
            return PatchNames("", "")
        segmentation = session.segmentation
        height, width = segmentation.image.shape[:2]
        own = [name for index, name in enumerate(segmentation.class_names) if index != segmentation.background_index]
        named = self.host.name_patch(session.embedding, point or (width // 2, height // 2), own)
        view = patch_names_html(named, segmentation.method, own, untrained=segmentation.is_random_weights)
        return PatchNames(view, view)
