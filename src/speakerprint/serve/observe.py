"""What operators watch: Prometheus metrics at ``GET /metrics`` and a request id on every request.

:class:`Observer` is the service's outermost ASGI middleware. For each HTTP request it

- takes the client's ``X-Request-ID`` when it is a plain token (letters, digits, ``-_.:``, at most
  64), else makes one, and sends it back in the response's ``X-Request-ID`` header;
- logs one line on the ``speakerprint.serve`` logger when the response is done:
  ``request_id method path status duration_ms`` (the path as sent, control characters escaped);
- counts it in the metrics below, by endpoint (the route's template, so ``/speakers/{name}`` is
  one series whatever the name) and status code.

Metrics (text format of prometheus-client, one registry per app):

- ``speakerprint_requests_total{endpoint, status}``: requests answered;
- ``speakerprint_request_seconds{endpoint}``: latency histogram, from the first byte of the
  request to the last of the response;
- ``speakerprint_requests_in_progress``: requests being served;
- ``speakerprint_batch_size``: waveforms per forward pass (histogram; 1 for every pass when
  batching is off);
- ``speakerprint_batch_queue``: waveforms waiting for a forward pass.

``/metrics``, like ``/health``, needs no API key: it holds counts and latencies, never a name,
an embedding or a file. Keep it off the public side of the proxy if even those are private.
"""

from __future__ import annotations

import contextvars
import logging
import re
import time
import uuid

__all__ = ["ENDPOINTS", "REQUEST_ID", "Metrics", "Observer"]

log = logging.getLogger("speakerprint.serve")

#: The id of the request being served, for log lines written while serving it.
REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")

#: The paths that get a series of their own; anything else counts as "other".
ENDPOINTS = ("/health", "/metrics", "/embed", "/verify", "/enroll", "/identify", "/speakers")
_GIVEN_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _endpoint(path: str) -> str:
    if path in ENDPOINTS:
        return path
    if path.startswith("/speakers/"):
        return "/speakers/{name}"
    return "other"


def printable(text: str, limit: int = 200) -> str:
    """``text`` for a log line: control characters escaped (no forged lines), cut at ``limit``."""
    text = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
    return text if len(text) <= limit else text[:limit] + "..."


class Metrics:
    """The service's Prometheus metrics, in a registry of its own (several apps in one process,
    as in tests, do not share series)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter(
            "speakerprint_requests_total",
            "Requests answered, by endpoint and status code.",
            ["endpoint", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "speakerprint_request_seconds",
            "Request latency, first byte in to last byte out.",
            ["endpoint"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )
        self.in_progress = Gauge(
            "speakerprint_requests_in_progress", "Requests being served.", registry=self.registry
        )
        self.batch_size = Histogram(
            "speakerprint_batch_size",
            "Waveforms per forward pass.",
            buckets=(1, 2, 4, 8, 16, 32, 64),
            registry=self.registry,
        )
        self.batch_queue = Gauge(
            "speakerprint_batch_queue",
            "Waveforms waiting for a forward pass.",
            registry=self.registry,
        )

    def exposition(self) -> tuple[bytes, str]:
        """The metrics in Prometheus text format, and its content type."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class Observer:
    """Pure ASGI middleware: request ids, one log line per request, and the request metrics."""

    def __init__(self, app, *, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope.get("headers") or []).get(b"x-request-id", b"").decode("latin-1")
        request_id = given if _GIVEN_ID.fullmatch(given) else uuid.uuid4().hex
        token = REQUEST_ID.set(request_id)
        endpoint = _endpoint(scope["path"])
        status = 500  # unless a response starts
        start = time.perf_counter()

        async def send_with_id(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
                message = {**message, "headers": headers}
            await send(message)

        self.metrics.in_progress.inc()
        try:
            await self.app(scope, receive, send_with_id)
            REQUEST_ID.reset(token)
        # On an exception the id stays set: Starlette's outermost handler answers the 500 with it.
        finally:
            seconds = time.perf_counter() - start
            self.metrics.in_progress.dec()
            self.metrics.requests.labels(endpoint, str(status)).inc()
            self.metrics.latency.labels(endpoint).observe(seconds)
            log.info(
                "%s %s %s %d %.1fms",
                request_id,
                scope["method"],
                printable(scope["path"]),
                status,
                1000 * seconds,
            )
