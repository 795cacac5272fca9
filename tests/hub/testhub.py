"""A minimal Hugging Face hub on 127.0.0.1 for tests: ``/{repo}/resolve/{revision}/{file}``.

huggingface_hub asks with HEAD for a file's commit, ETag and size, then GETs it; this answers
both from an in-memory dict, and can misbehave on purpose (a wrong body, a connection dropped
mid-file, a missing file). Every request is logged, so a test can assert that none was made.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class LocalHub:
    files: dict[tuple[str, str, str], bytes]  # (repo, revision, name) -> content
    corrupt: set[str] = field(default_factory=set)  # names served with one byte changed
    drop_after: dict[str, int] = field(default_factory=dict)  # name -> bytes sent before closing
    requests: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _lookup(self) -> tuple[str, bytes] | None:
                hub.requests.append(f"{self.command} {self.path}")
                path = self.path.split("?")[0].lstrip("/")
                if "/resolve/" not in path:
                    return None
                repo, rest = path.split("/resolve/", 1)
                revision, name = rest.split("/", 1)
                content = hub.files.get((repo, revision, name))
                if content is None:
                    return None
                if name in hub.corrupt:
                    content = bytes([content[0] ^ 1]) + content[1:]
                return revision, content

            def _headers(self, revision: str, content: bytes) -> None:
                self.send_response(200)
                self.send_header("X-Repo-Commit", revision)
                self.send_header("ETag", f'"{hashlib.sha256(content).hexdigest()}"')
                self.send_header("Content-Length", str(len(content)))
                self.send_header("Content-Type", "application/octet-stream")
                self.end_headers()

            def _missing(self) -> None:
                body = b"Entry not found"
                self.send_response(404)
                self.send_header("X-Error-Code", "EntryNotFound")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def do_HEAD(self) -> None:
                found = self._lookup()
                if found is None:
                    return self._missing()
                self._headers(*found)

            def do_GET(self) -> None:
                found = self._lookup()
                if found is None:
                    return self._missing()
                revision, content = found
                self._headers(revision, content)
                name = self.path.split("?")[0].rsplit("/", 1)[-1]
                if name in hub.drop_after:
                    self.wfile.write(content[: hub.drop_after[name]])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                self.wfile.write(content)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> LocalHub:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
