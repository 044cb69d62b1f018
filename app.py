"""SC-CLIP Explorer: `python app.py` (also how Hugging Face Spaces starts it).

Model and weights come from `--model`/`--weights` or the environment (`SCCLIP_MODEL`, default config.DEFAULT_MODEL;
`SCCLIP_WEIGHTS`, default the model's own tag: a pretrained tag, a weight file or "random"); the memory budget for all
visitors' results from `--session-budget-mb` or `SCCLIP_SESSION_BUDGET_MB` (default sessions.DEFAULT_BUDGET_MB, in
MB; `--help` states the values); the address and port from `--host`/`--port` or Gradio's usual GRADIO_SERVER_NAME /
GRADIO_SERVER_PORT. `--mcp` (or SCCLIP_MCP=1, or Gradio's own GRADIO_MCP_SERVER=True) also serves /segment as an
MCP tool at /gradio_api/mcp/, which needs Gradio's MCP extra (`pip install "gradio[mcp]"`).
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os

import gradio as gr

from demo.host import ModelHost
from demo.memory import tune_allocator
from demo.sessions import DEFAULT_BUDGET_MB, SessionStore
from demo.ui import build_interface, launch_options
from scclip_core import SegmenterConfig
from scclip_core.config import DEFAULT_MODEL

MCP_ENV = "SCCLIP_MCP"
MCP_MISSING = (
    "the MCP server needs Gradio's MCP extra, which is not installed. Install it with "
    f'pip install "gradio[mcp]=={gr.__version__}" (on a Hugging Face Space: put gradio[mcp]=={gr.__version__} '
    f"in requirements.txt), or start without --mcp, {MCP_ENV} and GRADIO_MCP_SERVER."
)


def build_demo(
    model_name: str | None = None,
    weights: str | None = None,
    *,
    config: SegmenterConfig | None = None,
    session_budget_mb: int | None = None,
    mcp: bool = False,
) -> gr.Blocks:
    """Load the one model of this process (never raising: a failure becomes a banner), start embedding the
    vocabulary presets in the background, and build the page.

    `config` overrides the paper's inference protocol (tests use a smaller one to stay fast); `mcp` builds the page
    for Gradio's MCP server (only /segment and /model_info become tools).
    """
    tune_allocator()
    model_name = model_name or os.environ.get("SCCLIP_MODEL", DEFAULT_MODEL)
    weights = weights or os.environ.get("SCCLIP_WEIGHTS")  # None: the model's own tag (resolve_weights)
    budget = session_budget_mb or int(os.environ.get("SCCLIP_SESSION_BUDGET_MB", DEFAULT_BUDGET_MB))
    host = ModelHost(model_name, weights, config=config)
    host.warm_up()
    return build_interface(host, SessionStore(budget << 20), mcp=mcp)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="SC-CLIP Explorer: the Gradio demo")
    parser.add_argument("--model", default=None, help=f"model name (env SCCLIP_MODEL, default {DEFAULT_MODEL})")
    parser.add_argument(
        "--weights",
        default=None,
        help="pretrained tag, weight file or 'random' (env SCCLIP_WEIGHTS, default: the model's own tag)",
    )
    parser.add_argument("--host", default=None, help="server address (default: GRADIO_SERVER_NAME or 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="server port (default: GRADIO_SERVER_PORT or 7860)")
    parser.add_argument(
        "--session-budget-mb",
        type=int,
        default=None,
        help=f"memory for all visitors' kept results (env SCCLIP_SESSION_BUDGET_MB, default {DEFAULT_BUDGET_MB})",
    )
    parser.add_argument("--share", action="store_true", help="create a temporary public gradio.live link")
    parser.add_argument(
        "--mcp",
        action="store_true",
        help=f"also serve /segment as an MCP tool at /gradio_api/mcp/ (env {MCP_ENV}=1 or GRADIO_MCP_SERVER=True; "
        'needs pip install "gradio[mcp]")',
    )
    return parser.parse_args(argv)


def mcp_requested(flag: bool = False) -> bool:
    """Whether to start Gradio's MCP server: `--mcp`, SCCLIP_MCP=1 (or true/yes), or GRADIO_MCP_SERVER=True."""
    ours = os.environ.get(MCP_ENV, "").strip().lower() in ("1", "true", "yes", "on")
    gradios = os.environ.get("GRADIO_MCP_SERVER", "").strip().lower() == "true"
    return flag or ours or gradios


def require_mcp() -> None:
    """Exit with how to install Gradio's MCP extra when it is missing (Gradio itself would only print a line and
    start without the MCP server)."""
    if importlib.util.find_spec("mcp") is None:
        raise SystemExit(f"error: {MCP_MISSING}")


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("demo").setLevel(logging.INFO)
    arguments = parse_args(argv)
    mcp = mcp_requested(arguments.mcp)
    if mcp:
        require_mcp()
    demo = build_demo(arguments.model, arguments.weights, session_budget_mb=arguments.session_budget_mb, mcp=mcp)
    demo.launch(
        server_name=arguments.host,
        server_port=arguments.port,
        share=arguments.share,
        mcp_server=mcp,
        **launch_options(),
    )


if __name__ == "__main__":
    main()
