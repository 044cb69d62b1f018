"""SC-CLIP Explorer: `python app.py` (also how Hugging Face Spaces starts it).

Model and weights come from `--model`/`--weights` or the environment (`SCCLIP_MODEL`, default ViT-B/16;
`SCCLIP_WEIGHTS`, default "openai": a pretrained tag, a weight file or "random"); the address and port from
`--host`/`--port` or Gradio's usual GRADIO_SERVER_NAME / GRADIO_SERVER_PORT.
"""

from __future__ import annotations

import argparse
import os

import gradio as gr

from scclip_core import SegmenterConfig

from demo.handlers import ModelHost
from demo.ui import build_interface, launch_options

DEFAULT_MODEL = "ViT-B/16"
DEFAULT_WEIGHTS = "openai"


def build_demo(
    model_name: str | None = None, weights: str | None = None, *, config: SegmenterConfig | None = None
) -> gr.Blocks:
    """Load the one model of this process (never raising: a failure becomes a banner) and build the page.

    `config` overrides the paper's inference protocol (tests use a smaller one to stay fast).
    """
    model_name = model_name or os.environ.get("SCCLIP_MODEL", DEFAULT_MODEL)
    weights = weights or os.environ.get("SCCLIP_WEIGHTS", DEFAULT_WEIGHTS)
    return build_interface(ModelHost(model_name, weights, config=config))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="SC-CLIP Explorer: the Gradio demo")
    parser.add_argument("--model", default=None, help=f"model name (env SCCLIP_MODEL, default {DEFAULT_MODEL})")
    parser.add_argument("--weights", default=None,
                        help=f"pretrained tag, weight file or 'random' (env SCCLIP_WEIGHTS, default {DEFAULT_WEIGHTS})")
    parser.add_argument("--host", default=None, help="server address (default: GRADIO_SERVER_NAME or 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="server port (default: GRADIO_SERVER_PORT or 7860)")
    parser.add_argument("--share", action="store_true", help="create a temporary public gradio.live link")
    return parser.parse_args(argv)


if __name__ == "__main__":
    arguments = parse_args()
    demo = build_demo(arguments.model, arguments.weights)
    demo.launch(server_name=arguments.host, server_port=arguments.port, share=arguments.share, **launch_options())
