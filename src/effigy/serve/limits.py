"""What bounds the service's inputs, clients and work, in front of the app.

- :class:`BodyLimit` (ASGI middleware): a request whose Content-Length is over the limit is refused before one
  byte of its body is read; a body sent without a length (chunked) is counted as it arrives and refused when it
  passes the limit; a body that takes longer than the body timeout is answered 408. The app only ever sees a
  body already in memory and within the limit, so Starlette's multipart parser never spools a large upload.
- :class:`HeaderTimeoutH11` (uvicorn's HTTP protocol): a connection that has not sent a whole request head
  within the header timeout is closed (a client that sends a request line and one header, then nothing,
  holds no connection for long).
- :class:`WorkQueue`: decoding and the model run in a bounded thread pool, off the event loop, with at most
  ``max_pending`` requests admitted; one more is answered 503 at once instead of queueing without bound.
"""
from __future__ import annotations

import asyncio
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, Callable, Iterator

log = logging.getLogger(__name__)
MULTIPART_OVERHEAD = 64 * 1024  # a form's boundaries and part headers around the image
BODY_METHODS = ("POST", "PUT", "PATCH")


class _TooLarge(Exception):
    pass


async def send_json(send: Callable, status: int, detail: str) -> None:
    """An HTTP response of ``{"detail": detail}`` with ``status``, straight from ASGI (no app involved)."""
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


class BodyLimit:
    """ASGI middleware: bodies over ``max_body`` bytes are refused (413) before or while they are read, and a
    body not received within ``body_timeout`` seconds is answered 408."""

    def __init__(self, app: Any, max_body: int, body_timeout: float) -> None:
        self.app, self.max_body, self.body_timeout = app, max_body, body_timeout

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or scope["method"] not in BODY_METHODS:
            await self.app(scope, receive, send)
            return
        too_large = f"the upload is over {(self.max_body - MULTIPART_OVERHEAD) / 2**20:g} MB; send a smaller face image."
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            await send_json(send, 413 if length.isdigit() else 400,
                            too_large if length.isdigit() else "the Content-Length header is not a number.")
            return
        try:
            body = await asyncio.wait_for(self._read(receive), self.body_timeout)
        except _TooLarge:
            await send_json(send, 413, too_large)
            return
        except asyncio.TimeoutError:
            log.info("a client sent its body too slowly; answered 408")
            await send_json(send, 408, f"the upload did not arrive within {self.body_timeout:g} s; send it again.")
            return
        await self.app(scope, _replay(body, receive), send)

    async def _read(self, receive: Callable) -> bytes:
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            size += len(message.get("body", b""))
            if size > self.max_body:
                raise _TooLarge
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        return b"".join(chunks)


def _replay(body: bytes, receive: Callable) -> Callable:
    """A ``receive`` that hands the app the body already read, then waits on the client as before."""
    sent = [False]

    async def replay() -> dict:
        if not sent[0]:
            sent[0] = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()
    return replay


class WorkQueue:
    """A bounded thread pool for the CPU work of requests (decoding, the face search): at most ``max_pending``
    requests admitted at a time, counted from admission to answer (the model's batcher included)."""

    def __init__(self, workers: int, max_pending: int) -> None:
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="effigy-serve")
        self.max_pending, self.pending = max_pending, 0

    def full(self) -> bool:
        return self.pending >= self.max_pending

    @contextmanager
    def admitted(self) -> Iterator[None]:
        """One request counted while it is worked on; the caller checks :meth:`full` first (admission is on the
        event loop, so the count cannot race)."""
        self.pending += 1
        try:
            yield
        finally:
            self.pending -= 1

    async def run(self, work: Callable, *args: Any) -> Any:
        """``work(*args)`` in the pool, off the event loop."""
        return await asyncio.get_running_loop().run_in_executor(self.pool, work, *args)


def header_timeout_protocol(seconds: float) -> type:
    """uvicorn's h11 protocol, closing a connection whose request head is not complete within ``seconds``."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeaderTimeoutH11(H11Protocol):
        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm_header_deadline()

        def _arm_header_deadline(self) -> None:
            self._awaiting_head_after = self.cycle  # the cycle before the next request's head
            self._head_deadline = self.loop.call_later(seconds, self._head_timed_out)

        def _head_timed_out(self) -> None:
            if self.cycle is self._awaiting_head_after and not self.transport.is_closing():
                log.info("a client sent no complete request head within %g s; connection closed", seconds)
                self.transport.close()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.cycle is not self._awaiting_head_after:
                self._head_deadline.cancel()

        def on_response_complete(self) -> None:
            self._head_deadline.cancel()
            self._arm_header_deadline()
            super().on_response_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._head_deadline.cancel()
            super().connection_lost(exc)

    return HeaderTimeoutH11
