"""A live uvicorn server for an app, in a background thread on a free port of 127.0.0.1."""

import contextlib
import socket
import threading
import time

import uvicorn


@contextlib.contextmanager
def live_server(app, *, log_level: str = "warning", lifespan: str = "auto"):
    """Yields (base_url, port) once the server accepts connections; stops it on exit."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))  # a free port, chosen by the kernel and held from here on
    port = sock.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(app, log_level=log_level, lifespan=lifespan))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}", port
    finally:
        srv.should_exit = True
        thread.join(10)
        sock.close()
