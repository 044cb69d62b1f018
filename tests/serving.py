"""The app served in-process for tests and developer tools: a small, fast configuration and a launcher."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import gradio as gr

from scclip_core import SegmenterConfig

FAST_CONFIG = SegmenterConfig(short_side=224, max_input_side=512, templates="simple")


@contextlib.contextmanager
def serve(
    model: str = "tiny-test",
    weights: str = "random",
    config: SegmenterConfig | None = FAST_CONFIG,
    session_budget_mb: int | None = None,
) -> Iterator[tuple[gr.Blocks, str]]:
    """The app launched in this process on a free local port: yields (demo, url), closes it afterwards."""
    from app import build_demo
    from demo.ui import launch_options

    demo = build_demo(model, weights, config=config, session_budget_mb=session_budget_mb)
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True, **launch_options())
    try:
        yield demo, url
    finally:
        demo.close()
