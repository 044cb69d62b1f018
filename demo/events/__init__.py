"""The functions the page's events call, in small families: raw inputs in, engine calls through `demo.host`,
named outputs (one NamedTuple per event, whose fields are the components they fill) out.

A visitor's latest result lives in the server-side `SessionStore` under Gradio's session id; cheap events
(opacity, thresholds, hidden classes, patch clicks) re-render from it without the model, and say "run again"
when it has expired or been evicted.
"""

from __future__ import annotations

from demo.admission import Admission
from demo.events.batch import BatchEvents
from demo.events.comparing import CompareEvents
from demo.events.inside import InsideEvents
from demo.events.live import LiveEvents
from demo.events.rendering import RenderEvents
from demo.events.segmenting import SegmentEvents
from demo.events.sharing import ShareEvents
from demo.events.video import VideoEvents
from demo.host import ModelHost
from demo.sessions import SessionStore


class Events:
    """Every family of events, bound to the one ModelHost, the session store and the heavy requests' admission."""

    def __init__(self, host: ModelHost, store: SessionStore | None = None, admission: Admission | None = None) -> None:
        self.host = host
        self.store = store if store is not None else SessionStore()
        self.admission = admission if admission is not None else Admission()
        self.segmenting = SegmentEvents(host, self.store, self.admission)
        self.rendering = RenderEvents(host, self.store)
        self.inside = InsideEvents(host, self.store)
        self.comparing = CompareEvents(self.segmenting)
        self.sharing = ShareEvents(self.segmenting)
        self.video = VideoEvents(self.segmenting)
        self.live = LiveEvents(host, self.segmenting)
        self.batch = BatchEvents(self.segmenting)
