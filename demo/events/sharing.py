"""Share events: a share link (Gradio's `?deep_link=...`) opens the sharer's view and runs it again in the new
session; old share-link snapshots are deleted."""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence
from typing import Any, NamedTuple

import gradio as gr

from demo.events.common import LOGGER
from demo.events.segmenting import Downloads, SegmentEvents
from demo.inputs import image_path
from demo.outputs import prune_share_links, share_links_folder
from demo.sessions import SESSION_TTL_S

SHARED_IMAGE_GONE = (
    "The image of this shared link is no longer on the server (uploads are kept for "
    f"{SESSION_TTL_S // 60} minutes). Ask for a new link, or upload the image and press Segment."
)


class OpenedLink(NamedTuple):
    """The token that starts the shared run, and the shared tab."""

    restore_token: Any
    views: Any


class ShareEvents:
    """Share links: what opening one restores and runs."""

    def __init__(self, segmenting: SegmentEvents) -> None:
        self.segmenting = segmenting

    def open_shared_link(
        self, image: Any, classes_text: str | None, view: str | None, request: gr.Request | None = None
    ) -> OpenedLink:
        """On page load. A share link restores the sharer's inputs and views in this page, but this new session
        keeps no result yet: when the link restored an image and classes, a fresh token starts the same run as
        Segment (same limits, same turns at the model). The shared tab opens too; a page opened without a link
        changes nothing."""
        query = dict(getattr(request, "query_params", None) or {}) if request is not None else {}
        if not query.get("deep_link"):
            return OpenedLink(gr.skip(), gr.skip())
        rerun = image_path(image) is not None and bool((classes_text or "").strip())
        tab = gr.Tabs(selected=view) if isinstance(view, str) and view.isidentifier() else gr.skip()
        return OpenedLink(uuid.uuid4().hex if rerun else gr.skip(), tab)

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
        refine: str | bool,
        refine_edges: bool = False,
        request: gr.Request | None = None,
        progress: gr.Progress = gr.Progress(),
    ) -> Downloads:
        """`segment` for a page opened from a share link: the same run, or a message saying the link is too old
        when the shared image is no longer on the server. A link made before the refine choice existed holds the
        "Refine edges" checkbox's boolean in its place, which `refine_choice` maps onto the choice."""
        path = image_path(image)
        if path is not None and not os.path.exists(path):
            LOGGER.info("a share link outlived its image")
            raise gr.Error(SHARED_IMAGE_GONE, title="Cannot run", print_exception=False)
        return self.segmenting.segment(
            image,
            classes_text,
            background_words,
            prob_threshold,
            method,
            stage_names,
            detector,
            beta,
            area_threshold,
            templates,
            refine,  # type: ignore[arg-type]  # a boolean from a share link made before the refine choice
            refine_edges,
            request=request,
            progress=progress,
        )

    def forget_old_share_links(self) -> None:
        """On each click on Share: delete the share-link snapshots that outlived their images."""
        prune_share_links(share_links_folder())
