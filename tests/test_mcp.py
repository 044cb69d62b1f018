"""The app as an MCP server (`python app.py --mcp`): a real MCP client over streamable HTTP lists the tools and
calls /segment with an image; without Gradio's MCP extra, `--mcp` stops with how to install it."""

from __future__ import annotations

import ast
import asyncio
import base64
import io
import os
import re
import struct
import zlib
from pathlib import Path

import gradio as gr
import httpx
import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import app
from demo.labels import METHOD_REFINEMENTS
from scclip_core import METHODS
from scclip_core.refinements import NO_REFINEMENT, REFINEMENTS
from tests.serving import FAST_CONFIG, serve

pytestmark = pytest.mark.timeout(180)


def data_uri(rgb: np.ndarray) -> str:
    """An image as a data: URI, which Gradio's MCP server accepts wherever a file URL goes."""
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def header_only_png(width: int, height: int) -> bytes:
    """A PNG whose header claims `width` x `height` (no pixel data): enough for a size check, a few bytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


def halves() -> np.ndarray:
    rgb = np.zeros((64, 96, 3), dtype=np.uint8)
    rgb[:, :48] = (220, 30, 30)
    rgb[:, 48:] = (30, 30, 220)
    return rgb


async def mcp_session_run(url: str, steps) -> object:
    """Open an MCP client session on the app's streamable HTTP endpoint and run `steps(session)` in it."""
    from mcp import ClientSession
    from mcp.client import streamable_http

    # `streamable_http_client` is the newer name (mcp 1.2x); Gradio's extra accepts mcp from 1.21 on.
    connect = getattr(streamable_http, "streamable_http_client", None) or streamable_http.streamablehttp_client
    async with connect(url + "gradio_api/mcp/") as (read, write, _):
        async with ClientSession(read, write) as session:
            await session.initialize()
            return await steps(session)


@pytest.fixture(scope="module")
def mcp_app() -> str:
    pytest.importorskip("mcp", reason='Gradio\'s MCP extra is not installed (pip install "gradio[mcp]")')
    with serve("tiny-test", "random", FAST_CONFIG, mcp=True) as (_, url):
        yield url


def test_only_segment_and_model_info_are_tools_and_say_how_to_use_them(mcp_app: str) -> None:
    async def steps(session):
        return (await session.list_tools()).tools

    tools = {tool.name: tool for tool in asyncio.run(mcp_session_run(mcp_app, steps))}
    assert set(tools) == {"segment", "model_info"}, "ablation, rethreshold and the page's own events are no tools"
    segment = tools["segment"]
    for words in ["label map", "palette PNG", "summary['classes']", "shares", "up to 100 classes", "megapixels"]:
        assert words in segment.description, words
    schema = segment.inputSchema
    assert schema["required"] == ["image", "classes_text"]
    assert "data: URI" in schema["properties"]["image"]["description"]
    assert "between synonyms" in schema["properties"]["classes_text"]["description"]
    assert schema["properties"]["method"]["enum"] == list(METHODS), "every registered method, the default first"
    assert schema["properties"]["refine"]["enum"] == [METHOD_REFINEMENTS, NO_REFINEMENT, *REFINEMENTS]
    assert "PEARL: TLP" in schema["properties"]["refine"]["description"]
    assert "per-request limits" in tools["model_info"].description


def test_the_segment_tool_segments_an_image_sent_as_a_data_uri(mcp_app: str) -> None:
    arguments = {"image": data_uri(halves()), "classes_text": "red; blue", "background_words": "", "prob_threshold": 0}
    progress: list[float] = []

    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        progress.append(done)

    async def steps(session):
        plain = await session.call_tool("segment", arguments)
        with_progress = await session.call_tool("segment", arguments, progress_callback=on_progress)
        refused = await session.call_tool("segment", {**arguments, "classes_text": ""})
        pearl = await session.call_tool("segment", {**arguments, "method": "pearl", "refine": "none"})
        resclip = await session.call_tool("segment", {**arguments, "method": "resclip", "refine": "tlp"})
        info = await session.call_tool("model_info", {})
        return plain, with_progress, refused, info, pearl, resclip

    plain, with_progress, refused, info, pearl, resclip = asyncio.run(mcp_session_run(mcp_app, steps))

    # Without a progress token Gradio returns both outputs in one text: the label PNG's file data and the summary.
    assert not plain.isError
    label_file, summary = ast.literal_eval(plain.content[0].text)
    assert summary["classes"] == ["red", "blue"] and summary["untrained_weights"] is True
    assert abs(sum(summary["shares"].values()) - 1.0) < 1e-6
    assert Image.open(label_file["path"]).size == (96, 64)
    assert label_file["url"].startswith(mcp_app) and "/gradio_api/file=" in label_file["url"]

    # With one, each output is its own content: the label map as a PNG image (and its URL), then the summary.
    assert not with_progress.isError and progress, "the client was told how the run goes"
    image = next(item for item in with_progress.content if item.type == "image")
    label_map = Image.open(io.BytesIO(base64.b64decode(image.data)))
    assert image.mimeType == "image/png" and label_map.mode == "P" and label_map.size == (96, 64)
    assert set(np.unique(np.asarray(label_map))) <= {0, 1}
    texts = [item.text for item in with_progress.content if item.type == "text"]
    assert ast.literal_eval(texts[-1])["classes"] == ["red", "blue"]

    assert refused.isError and "no classes" in refused.content[0].text
    assert ast.literal_eval(info.content[0].text)["model"] == "tiny-test"
    for result, method, ran in [(pearl, "pearl", []), (resclip, "resclip", ["tlp"])]:
        assert not result.isError
        _, summary = ast.literal_eval(result.content[0].text)
        assert summary["method"] == method and summary["refine"] == ran


def test_malformed_tool_calls_each_get_one_clear_error_and_the_server_keeps_working(mcp_app: str) -> None:
    """Breaks: an agent's tool call without an image, with a data URI that holds no image, or with a body over
    the MCP transport's limit. Expects: each call gets one error that says what is wrong, and the next call in
    the same session (or, after a refused body, a new session) segments as usual."""
    good = {"image": data_uri(halves()), "classes_text": "red; blue", "background_words": "", "prob_threshold": 0}
    text = base64.b64encode(b"a note, not a picture").decode()
    malformed = {
        "missing image": ({"classes_text": "red"}, "'image' is a required property"),
        "null image": ({**good, "image": None}, "None is not of type 'string'"),
        "text data URI": ({**good, "image": f"data:text/plain;base64,{text}"}, "could not read the file as an image"),
        "PNG data URI of text": ({**good, "image": f"data:image/png;base64,{text}"}, "could not read the file"),
        "huge by its header": (
            {**good, "image": "data:image/png;base64," + base64.b64encode(header_only_png(12000, 9000)).decode()},
            "108 megapixels",
        ),
    }

    async def steps(session):
        results = {name: await session.call_tool("segment", arguments) for name, (arguments, _) in malformed.items()}
        return results, await session.call_tool("segment", good)

    results, after = asyncio.run(mcp_session_run(mcp_app, steps))
    for name, (_, message) in malformed.items():
        result = results[name]
        assert result.isError and len(result.content) == 1 and message in result.content[0].text, name
    assert not after.isError and ast.literal_eval(after.content[0].text)[1]["classes"] == ["red", "blue"]

    oversized = {**good, "image": "data:image/png;base64," + "A" * (6 << 20)}  # over the transport's 4 MiB

    async def send_oversized(session):
        return await session.call_tool("segment", oversized)

    def raised(error: BaseException) -> list[BaseException]:
        """The error and those grouped inside it (the MCP client ends its session on an HTTP error)."""
        return [error, *(inner for grouped in getattr(error, "exceptions", ()) for inner in raised(grouped))]

    with pytest.raises(BaseException) as refused:
        asyncio.run(mcp_session_run(mcp_app, send_oversized))
    errors = raised(refused.value)
    statuses = [error.response.status_code for error in errors if isinstance(error, httpx.HTTPStatusError)]
    assert statuses == [413], "Request Entity Too Large, from the MCP transport, before the app sees it"

    async def segment_again(session):
        return await session.call_tool("segment", good)

    assert not asyncio.run(mcp_session_run(mcp_app, segment_again)).isError, "a new session is served as usual"


def test_the_mcp_server_comes_from_the_flag_or_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (app.MCP_ENV, "GRADIO_MCP_SERVER"):
        monkeypatch.delenv(name, raising=False)
    assert app.parse_args(["--mcp"]).mcp and not app.parse_args([]).mcp
    assert app.mcp_requested(True) and not app.mcp_requested(False)
    monkeypatch.setenv(app.MCP_ENV, "1")
    assert app.mcp_requested(False)
    monkeypatch.setenv(app.MCP_ENV, "0")
    monkeypatch.setenv("GRADIO_MCP_SERVER", "True")
    assert app.mcp_requested(False)


def test_mcp_without_the_extra_stops_with_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = app.importlib.util.find_spec
    monkeypatch.setattr(
        app.importlib.util,
        "find_spec",
        lambda name, package=None: None if name == "mcp" else real_find_spec(name, package),
    )
    built = []
    monkeypatch.setattr(app, "build_demo", lambda *args, **kwargs: built.append(args))
    with pytest.raises(SystemExit, match=re.escape(f'pip install "gradio[mcp]=={gr.__version__}"')):
        app.main(["--mcp", "--weights", "random"])
    assert not built, "it stops before loading any model"


def test_the_requirements_name_the_mcp_extra() -> None:
    root = Path(__file__).resolve().parents[1]
    assert "gradio[mcp]==" in (root / "requirements-dev.txt").read_text()
    assert "SCCLIP_MCP" in (root / "requirements.txt").read_text()
