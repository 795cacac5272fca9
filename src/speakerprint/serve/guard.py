"""The service's ASGI guard: the API key and the body size, checked before any route reads the body.

Imported by :func:`~speakerprint.serve.app.create_app` once Starlette is known to be installed.
"""

from __future__ import annotations

import hmac
import json

from starlette.exceptions import HTTPException

from speakerprint.serve.state import ServeLimits

__all__ = ["API_KEY_HEADER", "OPEN_PATHS", "Guard"]

API_KEY_HEADER = "X-API-Key"
#: Paths that never need the API key.
OPEN_PATHS = frozenset({"/health"})


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
    then counts body bytes as they arrive and stops the request once they exceed the limit.

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

        async def counting_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # An HTTPException, so that FastAPI re-raises it from its body parsing as
                    # it is (the app's handler answers with this body).
                    body = self._too_large_body(path, received, limit, True)
                    raise HTTPException(413, detail=body)
            return message

        await self.app(scope, counting_receive, send)

    def _too_large_body(self, path: str, size: int, limit: int, streamed: bool) -> dict:
        size_text = f"sent at least {size}" if streamed else f"declares {size}"
        return {
            "error": "upload_too_large",
            "detail": (
                f"the request to {path} {size_text} bytes, over its limit of {limit} bytes "
                f"(at most {self.limits.max_upload_mb:g} MiB per upload)"
            ),
        }
