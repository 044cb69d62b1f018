"""SC-CLIP Explorer: `python app.py` (also how Hugging Face Spaces starts it).

Model and weights come from `--model`/`--weights` or the environment (`SCCLIP_MODEL`, default ViT-B/16;
`SCCLIP_WEIGHTS`, default "openai": a pretrained tag, a weight file or "random"); the memory budget for all
visitors' results from `--session-budget-mb` or `SCCLIP_SESSION_BUDGET_MB` (default 256); the address and port
from `--host`/`--port` or Gradio's usual GRADIO_SERVER_NAME / GRADIO_SERVER_PORT.
"""

from __future__ import annotations

import argparse
import logging
import os

import gradio as gr

from demo.host import ModelHost
from demo.memory import tune_allocator
from demo.sessions import DEFAULT_BUDGET_MB, SessionStore
from demo.ui import build_interface, launch_options
from scclip_core import SegmenterConfig

DEFAULT_MODEL = "ViT-B/16"
DEFAULT_WEIGHTS = "openai"


def build_demo(
    model_name: str | None = None,
    weights: str | None = None,
    *,
    config: SegmenterConfig | None = None,
    session_budget_mb: int | None = None,
) -> gr.Blocks:
    """Load the one model of this process (never raising: a failure becomes a banner), start embedding the
    vocabulary presets in the background, and build the page.

    `config` overrides the paper's inference protocol (tests use a smaller one to stay fast).
    """
    tune_allocator()
    model_name = model_name or os.environ.get("SCCLIP_MODEL", DEFAULT_MODEL)
    weights = weights or os.environ.get("SCCLIP_WEIGHTS", DEFAULT_WEIGHTS)
    budget = session_budget_mb or int(os.environ.get("SCCLIP_SESSION_BUDGET_MB", DEFAULT_BUDGET_MB))
    host = ModelHost(model_name, weights, config=config)
    host.warm_up()
    return build_interface(host, SessionStore(budget << 20))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="SC-CLIP Explorer: the Gradio demo")
    parser.add_argument("--model", default=None, help=f"model name (env SCCLIP_MODEL, default {DEFAULT_MODEL})")
    parser.add_argument(
        "--weights",
        default=None,
        help=f"pretrained tag, weight file or 'random' (env SCCLIP_WEIGHTS, default {DEFAULT_WEIGHTS})",
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
    return parser.parse_args(argv)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("demo").setLevel(logging.INFO)
    arguments = parse_args()
    demo = build_demo(arguments.model, arguments.weights, session_budget_mb=arguments.session_budget_mb)
    demo.launch(server_name=arguments.host, server_port=arguments.port, share=arguments.share, **launch_options())
