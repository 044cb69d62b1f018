"""What every family of events shares: the visitor's session id, expected errors as `gr.Error`, and outputs
that leave every component but a few as they are."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, TypeVar

import gradio as gr

from demo.admission import Admission, visitor_key
from demo.host import ON_ZERO_GPU
from scclip_core import ScclipError

LOGGER = logging.getLogger("demo.events")
LOCAL_SESSION = "local"
Function = TypeVar("Function", bound=Callable[..., Any])

Outputs = TypeVar("Outputs", bound=tuple[Any, ...])


def session_id(request: gr.Request | None) -> str:
    """Gradio's id of the browser tab (or API client) that sent the event."""
    return getattr(request, "session_hash", None) or LOCAL_SESSION


def admitted(admission: Admission, request: gr.Request | None) -> AbstractContextManager[float]:
    """A heavy request's place among its visitor's, then its slot at the model (see `demo.admission`); yields the
    seconds waited for the slot."""
    return admission.enter(visitor_key(request, session_id(request), admission.proxies))


def as_user_error(error: Exception) -> gr.Error:
    """A gr.Error for the page and for gradio_client. Expected errors (bad input, missing weights) are logged
    as one line; anything else is logged once with its traceback and summarised for the user."""
    if isinstance(error, ScclipError):
        LOGGER.info("refused a request: %s", error)
        return gr.Error(str(error), title="Cannot run", print_exception=False)
    LOGGER.exception("unexpected error in a demo event")
    return gr.Error(
        f"unexpected {type(error).__name__}: {error}. Try another image or fewer classes.",
        title="Error",
        print_exception=False,
    )


def user_error(function: Function) -> Function:
    """Decorate an event function: whatever it raises reaches the visitor as a `gr.Error` (see `as_user_error`);
    a `gr.Error` it raises itself passes unchanged. Gradio still sees the function's own signature."""

    @functools.wraps(function)
    def event(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except gr.Error:
            raise
        except Exception as error:
            raise as_user_error(error) from error

    return event  # type: ignore[return-value]


def output_names(outputs: type[tuple[Any, ...]]) -> tuple[str, ...]:
    """The names of the components an event's outputs (a NamedTuple) fill, in order."""
    return outputs._fields  # type: ignore[attr-defined]  # every NamedTuple has them


def leave_others(outputs: type[Outputs], **values: Any) -> Outputs:
    """An event's outputs (a NamedTuple) with the given `values` and every other component left as it is."""
    return outputs(*(values.get(name, gr.skip()) for name in output_names(outputs)))


def progress_reporter(progress: gr.Progress | None) -> Callable[[float, str], None] | None:
    """The engine's progress callback for Gradio's progress bar (none on ZeroGPU, whose worker cannot report)."""
    if progress is None or ON_ZERO_GPU:
        return None
    return lambda fraction, message: progress(fraction, desc=message)
