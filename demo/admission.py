"""Fair shares of the model: each visitor holds at most a few places among the heavy requests (segment, the re-run
a share link starts, ablation, a video, a batch) waiting or running, and the admitted ones take the model's slots
first come, first served. A webcam stream is not one of them: it has its own slots, and drops frames instead.

A visitor is Gradio's session hash plus the client address: the direct peer, or, when that peer is a trusted
proxy (`SCCLIP_TRUSTED_PROXIES`, e.g. Hugging Face Spaces' own proxy), the client entry of its `X-Forwarded-For`
header. Gradio's queue hands heavy requests to their handlers at once (up to `HEAVY_ADMITTED`), so a request
waiting for a slot is counted here, and a visitor's extra request is refused at once instead of waiting behind
its own others.
"""

from __future__ import annotations

import collections
import contextlib
import ipaddress
import os
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

from scclip_core import ScclipError

MAX_QUEUED_ENV = "SCCLIP_MAX_QUEUED_PER_VISITOR"
DEFAULT_MAX_QUEUED = 2
TRUSTED_PROXIES_ENV = "SCCLIP_TRUSTED_PROXIES"
HEAVY_CONCURRENCY = 4  # heavy requests at the model at once: bounds their memory
HEAVY_ADMITTED = 16  # heavy requests inside their handlers (running or waiting for a slot) at once
MCP_SESSION_HEADER = "mcp-session-id"  # every MCP tool call reaches the app through one loopback client
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class TooManyRequests(ScclipError):
    """A visitor already holds all their places: the page and the API show the message, the log one line."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"You already have {limit} requests waiting or running on this server, the most one visitor may have "
            "at once, so that everyone gets a turn. Wait for one of them to finish, then send this one again."
        )


def max_queued_per_visitor() -> int:
    """`SCCLIP_MAX_QUEUED_PER_VISITOR` (a whole number of at least 1), or the default."""
    text = os.environ.get(MAX_QUEUED_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_QUEUED
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"{MAX_QUEUED_ENV} must be a whole number of at least 1, not {text!r}")
    return int(text)


def trusted_proxies(text: str | None = None) -> tuple[Network, ...]:
    """The networks whose `X-Forwarded-For` is believed: comma-separated addresses or CIDR networks
    (`SCCLIP_TRUSTED_PROXIES` when `text` is None; none by default)."""
    text = os.environ.get(TRUSTED_PROXIES_ENV, "") if text is None else text
    try:
        return tuple(ipaddress.ip_network(part.strip(), strict=False) for part in text.split(",") if part.strip())
    except ValueError as error:
        raise ValueError(f"{TRUSTED_PROXIES_ENV}: {error}") from error


def _is_trusted(address: str, proxies: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return False
    return any(ip in network for network in proxies)


def client_address(peer: str | None, forwarded_for: str | None, proxies: Sequence[Network]) -> str | None:
    """The client's address: the direct `peer`, unless it is a trusted proxy; then the right-most entry of
    `forwarded_for` that is not a trusted proxy itself (entries further left were written by the client and
    prove nothing)."""
    if peer is None or not _is_trusted(peer, proxies):
        return peer
    for entry in reversed((forwarded_for or "").split(",")):
        if entry.strip() and not _is_trusted(entry, proxies):
            return entry.strip()
    return peer


def visitor_key(request: Any, session: str, proxies: Sequence[Network]) -> str:
    """Who sent `request` (a gr.Request or None): the session, the client address and, for an MCP tool call, the
    MCP session."""
    client = getattr(request, "client", None)
    headers = getattr(request, "headers", None) or {}
    address = client_address(getattr(client, "host", None), headers.get("x-forwarded-for"), proxies)
    return " ".join(part for part in (session, address, headers.get(MCP_SESSION_HEADER)) if part)


class ModelSlots:
    """`count` slots at the model, given first come, first served."""

    def __init__(self, count: int) -> None:
        self._condition = threading.Condition()
        self._waiting: collections.deque[object] = collections.deque()
        self._free = count

    @contextlib.contextmanager
    def hold(self) -> Iterator[float]:
        """Wait for a slot; yields the seconds waited."""
        started = time.perf_counter()
        ticket = object()
        with self._condition:
            self._waiting.append(ticket)
            self._condition.wait_for(lambda: self._waiting[0] is ticket and self._free > 0)
            self._waiting.popleft()
            self._free -= 1
            self._condition.notify_all()
        try:
            yield time.perf_counter() - started
        finally:
            with self._condition:
                self._free += 1
                self._condition.notify_all()


class Admission:
    """Places per visitor and the model's slots, for every heavy request. Thread-safe."""

    def __init__(
        self,
        max_per_visitor: int | None = None,
        slots: int = HEAVY_CONCURRENCY,
        proxies: Sequence[Network] | None = None,
    ) -> None:
        self.max_per_visitor = max_queued_per_visitor() if max_per_visitor is None else max_per_visitor
        self.proxies = trusted_proxies() if proxies is None else tuple(proxies)
        self.slots = ModelSlots(slots)
        self._held: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()

    def held(self, visitor: str) -> int:
        """How many places `visitor` holds now."""
        with self._lock:
            return self._held[visitor]

    @contextlib.contextmanager
    def place(self, visitor: str) -> Iterator[None]:
        """One of `visitor`'s places, or TooManyRequests at once; given back however the request ends."""
        with self._lock:
            if self._held[visitor] >= self.max_per_visitor:
                raise TooManyRequests(self.max_per_visitor)
            self._held[visitor] += 1
        try:
            yield
        finally:
            with self._lock:
                self._held[visitor] -= 1
                if not self._held[visitor]:
                    del self._held[visitor]

    @contextlib.contextmanager
    def enter(self, visitor: str) -> Iterator[float]:
        """A place for `visitor`, then a slot at the model; yields the seconds waited for the slot."""
        with self.place(visitor), self.slots.hold() as waited:
            yield waited
