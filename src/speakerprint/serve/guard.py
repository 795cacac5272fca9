"""The service's ASGI guard: the API key, the body size and the body's time limit, checked before
and while any route reads the body.

Imported by :func:`~speakerprint.serve.app.create_app` once Starlette is known to be installed.
"""

from __future__ import annotations

import hmac
import json
import time

import anyio
from starlette.exceptions import HTTPException

from speakerprint.serve.state import ServeLimits

__all__ = ["API_KEY_HEADER", "OPEN_PATHS", "Guard"]

API_KEY_HEADER = "X-API-Key"
#: Paths that never need the API key.
OPEN_PATHS = frozenset({"/health", "/metrics"})
_CLOSE = {"Connection": "close"}


async def _send_json(send, status: int, body: dict) -> None:
    data = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})


class Guard:
    """Pure ASGI middleware: checks the API key and the declared body size before the app runs,
    then counts body bytes as they arrive and stops the request once they exceed the limit, or
    once the body has taken longer than ``limits.body_timeout_s`` (408).

    A wrong key is answered 401 at once, compared in constant time; there is no rate limit here:
    that belongs to the proxy in front (see docs/reliability.md).

    Done here rather than in route dependencies because FastAPI parses (and spools) a form body
    before it runs a route's dependencies.
    """

    def __init__(self, app, *, api_key: str | None, limits: ServeLimits) -> None:
        self.app = app
        self.api_key = None if api_key is None else api_key.encode()
        self.limits = limits

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        headers = dict(scope.get("headers") or [])
        if self.api_key is not None and path not in OPEN_PATHS:
            given = headers.get(API_KEY_HEADER.lower().encode())
            if given is None:
                await _send_json(
                    send,
                    401,
                    {"error": "missing_api_key", "detail": f"send the {API_KEY_HEADER} header"},
                )
                return
            if not hmac.compare_digest(given, self.api_key):
                await _send_json(
                    send, 401, {"error": "wrong_api_key", "detail": f"wrong {API_KEY_HEADER}"}
                )
                return
        limit = self.limits.body_limit(path)
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _send_json(send, 413, self._too_large_body(path, int(declared), limit, False))
            return

        received = 0
        body_done = False
        # uvicorn has no timeout on a request body: without this deadline a client sending a
        # byte a second holds its connection, and the memory of its half-parsed form, forever.
        deadline = time.monotonic() + self.limits.body_timeout_s

        async def guarded_receive():
            nonlocal received, body_done
            if body_done:  # after the body: only a disconnect is left to wait for
                return await receive()
            with anyio.move_on_after(deadline - time.monotonic()) as waiting:
                message = await receive()
            if waiting.cancelled_caught:
                # An HTTPException, so that FastAPI re-raises it from its body parsing as it is
                # (the app's handler answers with this body); "Connection: close" makes uvicorn
                # close the connection after the answer instead of reading on.
                raise HTTPException(408, detail=self._too_slow_body(path, received), headers=_CLOSE)
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                body_done = not message.get("more_body", False)
                if received > limit:
                    body = self._too_large_body(path, received, limit, True)
                    raise HTTPException(413, detail=body)
            return message

        await self.app(scope, guarded_receive, send)

    def _too_slow_body(self, path: str, received: int) -> dict:
        return {
            "error": "body_timeout",
            "detail": (
                f"the request to {path} sent {received} bytes of its body in "
                f"{self.limits.body_timeout_s:g} s, its time limit; send the body at once"
            ),
        }

    def _too_large_body(self, path: str, size: int, limit: int, streamed: bool) -> dict:
        size_text = f"sent at least {size}" if streamed else f"declares {size}"
        return {
            "error": "upload_too_large",
            "detail": (
                f"the request to {path} {size_text} bytes, over its limit of {limit} bytes "
                f"(at most {self.limits.max_upload_mb:g} MiB per upload)"
            ),
        }
