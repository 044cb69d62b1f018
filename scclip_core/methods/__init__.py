"""The registry of methods: one module per method, each declaring its `SPEC` (`MethodSpec`). Everything that
lists methods (the command lines, the eval's `--protocol own`, the demo, `model_info`) reads `METHOD_SPECS`.
Free of torch."""

from __future__ import annotations

from ..config import Method
from . import clearclip, clip, maskclip, naclip, sc_clip, sclip
from .base import PUBLISHED_DATASETS, MethodProtocol, MethodSpec, Published

METHOD_SPECS: dict[Method, MethodSpec] = {
    module.SPEC.name: module.SPEC for module in (sc_clip, clip, maskclip, sclip, clearclip, naclip)
}
"""Each method's declaration by name, in the order the methods are listed everywhere."""

__all__ = ["METHOD_SPECS", "PUBLISHED_DATASETS", "MethodProtocol", "MethodSpec", "Published"]
