"""The registry of methods: one module per method in this package, each declaring its `SPEC` (`MethodSpec`).
Adding a method is adding a module. Everything that lists methods (the command lines, the eval's `--protocol own`,
the demo, `model_info`) reads `METHOD_SPECS`. Free of torch."""

from __future__ import annotations

import importlib
import pkgutil

from ..config import DEFAULT_METHOD, Method
from ..errors import InputError
from .base import PUBLISHED_DATASETS, LastBlockOutput, MethodProtocol, MethodSpec, Published


def _discover() -> dict[Method, MethodSpec]:
    specs = [
        module.SPEC
        for info in pkgutil.iter_modules(__path__)
        if isinstance(getattr(module := importlib.import_module(f"{__name__}.{info.name}"), "SPEC", None), MethodSpec)
    ]
    specs.sort(key=lambda spec: (spec.name != DEFAULT_METHOD, spec.year, spec.name))
    return {spec.name: spec for spec in specs}


METHOD_SPECS: dict[Method, MethodSpec] = _discover()
"""Each method's declaration by name: the default method first, then the others by year of publication."""

METHODS: tuple[Method, ...] = tuple(METHOD_SPECS)
"""The method names, in the order they are listed everywhere."""


DEFAULT_ABLATION_METHODS: tuple[Method, ...] = tuple(
    name for name, spec in METHOD_SPECS.items() if spec.in_default_ablation
)
"""The methods the ablation runs unless asked otherwise."""


def method_spec(name: object) -> MethodSpec:
    """The spec of method `name`; raises InputError listing the methods (the one check of a method name)."""
    if isinstance(name, str) and name in METHOD_SPECS:
        return METHOD_SPECS[name]
    raise InputError(f"unknown method {name!r}; choose one of {list(METHODS)}")


def method_named(name: object) -> Method:
    """`name` as a registered `Method`; raises InputError listing the methods."""
    return method_spec(name).name


__all__ = [
    "DEFAULT_ABLATION_METHODS",
    "METHODS",
    "METHOD_SPECS",
    "PUBLISHED_DATASETS",
    "LastBlockOutput",
    "MethodProtocol",
    "MethodSpec",
    "Published",
    "method_named",
    "method_spec",
]
