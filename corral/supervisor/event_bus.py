"""The engine's event stream: every subscriber gets every event from when it subscribed;
one that falls behind is dropped and told so (``TooSlow``), never waited for by the engine."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import AsyncIterator

import trio

from corral.errors import TooSlow
from corral.oci.state import rfc3339_now

EVENT_BUFFER = 4096


class Subscription:
    """The events of one subscriber, in order; ``TooSlow`` after the last one it got when
    it fell more than ``EVENT_BUFFER`` events behind (an event stream with a silent gap
    would be a lie)."""

    def __init__(self, receive: trio.MemoryReceiveChannel) -> None:
        self._receive = receive

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> dict:
        try:
            return await self._receive.receive()
        except trio.EndOfChannel:  # the bus closes a channel only to drop its subscriber
            raise TooSlow(f"events: the subscriber fell more than {EVENT_BUFFER} events "
                          f"behind and was dropped (subscribe again, and read the state of "
                          f"what it missed)") from None


class EventBus:
    def __init__(self) -> None:
        self._subscribers: set[trio.MemorySendChannel] = set()

    @asynccontextmanager
    async def subscribe(self) -> AsyncIterator[Subscription]:
        """Events from now on: ``{"type", "id", "time", ...}``."""
        send, receive = trio.open_memory_channel(EVENT_BUFFER)
        self._subscribers.add(send)
        try:
            yield Subscription(receive)
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
