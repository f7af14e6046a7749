"""The engine's event stream: every subscriber gets every event from when it subscribed;
one that falls behind is dropped (its channel closes), never the engine."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import AsyncIterator

import trio

from corral.oci.state import rfc3339_now

EVENT_BUFFER = 4096


class EventBus:
    def __init__(self) -> None:
        self._subscribers: set[trio.MemorySendChannel] = set()

    @asynccontextmanager
    async def subscribe(self) -> AsyncIterator[trio.MemoryReceiveChannel]:
        """Events from now on: ``{"type", "id", "time", ...}``; a subscriber more than
        ``EVENT_BUFFER`` events behind is dropped."""
        send, receive = trio.open_memory_channel(EVENT_BUFFER)
        self._subscribers.add(send)
        try:
            yield receive
        finally:
            self._subscribers.discard(send)
            send.close()
            receive.close()

    def emit(self, kind: str, cid: str, **extra) -> None:
        event = {"type": kind, "id": cid, "time": rfc3339_now(), **extra}
        for send in list(self._subscribers):
            try:
                send.send_nowait(event)
            except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
                self._subscribers.discard(send)
                send.close()
