"""Shared fixtures: the tiny random CLIP, the parity fixture, and synthetic images."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
import torch

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ["SCCLIP_CACHE"] = tempfile.mkdtemp(prefix="scclip-test-cache-")  # never the real home cache

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures"
FIXTURE = FIXTURES / "scclip_parity_tiny.pt"
FIXTURE_448 = FIXTURES / "scclip_parity_tiny_448.pt"


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory, monkeypatch) -> Path:
    """Each test gets its own SCCLIP_CACHE, so no test sees text embeddings another one wrote."""
    folder = tmp_path_factory.mktemp("scclip-cache")
    monkeypatch.setenv("SCCLIP_CACHE", str(folder))
    return folder


@pytest.fixture(scope="session")
def tiny_model():
    from scclip_core import load_model

    torch.manual_seed(0)
    return load_model("tiny-test", weights="random", device="cpu")


@pytest.fixture(scope="session")
def parity_fixture() -> dict:
    return _load_fixture(FIXTURE)


@pytest.fixture(scope="session")
def parity_fixture_448() -> dict:
    return _load_fixture(FIXTURE_448)


def _load_fixture(path: Path) -> dict:
    if not path.is_file():
        pytest.skip(f"parity fixture not found at {path} (it lives in ../shared/fixtures beside the checkout)")
    return torch.load(path, weights_only=False)


@pytest.fixture(scope="module")
def demo_host():
    """The demo's ModelHost on the tiny random model, shared by a module's tests (building one is their slow part);
    tests that need a host in a special state (nothing embedded yet, patched turns) build their own."""
    from demo.host import ModelHost
    from tests.serving import FAST_CONFIG

    return ModelHost("tiny-test", "random", config=FAST_CONFIG)


@pytest.fixture
def events(demo_host):
    """The demo's events on the shared host, with a session store of their own."""
    from demo.events import Events

    return Events(demo_host)
