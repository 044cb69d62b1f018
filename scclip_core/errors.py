"""User-facing errors: each message says what went wrong and how to fix it; and how the command lines show them."""

from __future__ import annotations

import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO


class ScclipError(Exception):
    """Base class for every error the engine raises on purpose."""


class UnknownModelError(ScclipError, ValueError):
    """The model name is neither a known alias nor an open_clip architecture."""


class WeightsUnavailableError(ScclipError, RuntimeError):
    """Weights could not be found, downloaded or loaded."""


class InputError(ScclipError, ValueError):
    """Bad user input: class text, image, or option values."""


class OutputError(ScclipError, OSError):
    """An output file or folder could not be written (no permission, disk full, a file where a folder should be)."""


@contextmanager
def one_line_warnings(stream: TextIO | None = None) -> Iterator[None]:
    """Show warnings as single `warning: message` lines (on stderr by default), the command lines' style."""

    def show(message: Warning | str, *_: object, **__: object) -> None:
        print(f"warning: {one_line(message)}", file=stream or sys.stderr)

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield


@contextmanager
def output_errors(path: object) -> Iterator[None]:
    """Turn an OSError while writing `path` into an OutputError that names it (ScclipErrors pass unchanged)."""
    try:
        yield
    except ScclipError:
        raise
    except OSError as error:
        raise OutputError(f"could not write {path}: {error.strerror or error}") from error


def one_line(message: object) -> str:
    """An error's or warning's message on one line (messages quoted from libraries may span several)."""
    return " ".join(str(message).split())
