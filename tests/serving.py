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
    mcp: bool = False,
) -> Iterator[tuple[gr.Blocks, str]]:
    """The app launched in this process on a free local port: yields (demo, url), closes it afterwards.

    `mcp` also starts Gradio's MCP server (at url + "gradio_api/mcp/"), as `python app.py --mcp` does.
    """
    from app import build_demo
    from demo.ui import launch_options

    demo = build_demo(model, weights, config=config, session_budget_mb=session_budget_mb, mcp=mcp)
    _, url, _ = demo.launch(prevent_thread_lock=True, quiet=True, mcp_server=mcp, **launch_options())
    try:
        yield demo, url
    finally:
        demo.close()
