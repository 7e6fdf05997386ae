"""The service's bounds, against a real uvicorn server on loopback: a body over the limit refused before it is
read (by its Content-Length, or as a chunked body passes the limit), a stalled client's connection closed, a slow
body answered 408, a pixel bomb and an EPS never decoded, a full work queue answered 503, and memory flat over 200
mixed uploads. Every request loop here is bounded in count and time, and only 127.0.0.1 is addressed."""
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import psutil
import pytest

from effigy.serve.app import ServiceSettings, bind, create_app, service_server, url_of
from tests.images import eps_bytes, png_bytes, strip_png

MAX = 200_000


class StubDetector:
    """Scores every image 0.25 after an optional wait (so a test can fill the work queue)."""

    name = "stub"

    def __init__(self) -> None:
        self.release = threading.Event()
        self.release.set()
        self.calls = 0
        self.batch_sizes: list[int] = []

    def __call__(self, image: np.ndarray) -> tuple[float, str]:
        self.calls += 1
        self.release.wait(10)
        return 0.25, f"mean {image.mean():.3f}"

    def score(self, batch: np.ndarray) -> list[tuple[float, str]]:
        self.batch_sizes.append(len(batch))
        return [self(image) for image in batch]


class Running:
    """A service in a thread on an ephemeral loopback port; stopped on exit."""

    def __init__(self, settings: ServiceSettings, detector) -> None:
        self.sock = bind("127.0.0.1", 0)
        self.port = self.sock.getsockname()[1]
        self.url = url_of(self.sock)
        self.server = service_server(create_app(settings, detector), settings)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> "Running":
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        return self

    def __exit__(self, *_) -> None:
        self.server.should_exit = True
        self.thread.join(10)

    def raw(self, data: bytes) -> socket.socket:
        connection = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        connection.sendall(data)
        return connection


def _answer(connection: socket.socket, limit: float = 10.0) -> bytes:
    """What the server sends until it closes the connection (or ``limit`` seconds pass)."""
    connection.settimeout(limit)
    received = b""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            chunk = connection.recv(65536)
        except (socket.timeout, ConnectionResetError):
            break
        if not chunk:
            break
        received += chunk
    connection.close()
    return received


SETTINGS = ServiceSettings(max_bytes=MAX, header_timeout=0.5, body_timeout=1.0, max_pending=2)


@pytest.fixture(scope="module")
def service():
    with Running(SETTINGS, StubDetector()) as running:
        yield running


def test_a_declared_large_body_is_refused_before_it_is_read(service):
    start = time.monotonic()
    head = (f"POST /detect HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
            f"Content-Length: {2**30}\r\n\r\n").encode()
    answer = _answer(service.raw(head + b"--b\r\n"))
    assert answer.startswith(b"HTTP/1.1 413") and b"over" in answer and time.monotonic() - start < 3


def test_a_chunked_body_is_refused_as_it_passes_the_limit(service):
    connection = service.raw(b"POST /detect HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                             b"Transfer-Encoding: chunked\r\n\r\n")
    chunk = b"x" * 65536
    sent = 0
    try:
        # at most 64 MiB, more than loopback's socket buffers hold (they took all of an earlier 4 MiB once); the
        # limit is about 0.26 MiB, so a server that stops reading there breaks the pipe long before
        for _ in range(1024):
            connection.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
            sent += len(chunk)
    except (BrokenPipeError, ConnectionResetError):
        pass
    answer = _answer(connection)
    assert answer.startswith(b"HTTP/1.1 413") and sent < 64 * 2**20


def test_a_stalled_client_is_disconnected_and_a_slow_body_answered_408(service):
    start = time.monotonic()
    assert _answer(service.raw(b"POST /detect HTTP/1.1\r\nHost: x\r\n")) == b""  # closed, no request made
    assert time.monotonic() - start < 5
    slow = service.raw(b"POST /detect HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n0123456789")
    assert _answer(slow).startswith(b"HTTP/1.1 408")
    assert httpx.get(service.url + "health").json()["status"] == "ok"  # the server is still there


@pytest.mark.parametrize("name, data, content_type, words", [
    ("strip.png", strip_png(40_000_000, 1), "image/png", "pixels"),
    ("big.png", strip_png(9000, 9000), "image/png", "pixels"),
    ("eps_as.png", eps_bytes(), "image/png", "not a readable image"),
])
def test_bombs_and_foreign_formats_are_refused_without_decoding(service, name, data, content_type, words, fake_gs):
    start = time.monotonic()
    response = httpx.post(service.url + "detect", files={"image": (name, data, content_type)}, timeout=10)
    assert response.status_code == 422 and words in response.json()["detail"]
    assert time.monotonic() - start < 2 and not fake_gs.exists()


def test_media_types_are_case_insensitive_and_take_parameters(service):
    for declared in ("IMAGE/PNG", "image/png; charset=binary"):
        response = httpx.post(service.url + "detect", files={"image": ("f.png", png_bytes(), declared)}, timeout=10)
        assert response.status_code == 200 and response.json()["p_fake"] == 0.25
    missing = httpx.post(service.url + "detect", files={"other": ("f.png", png_bytes(), "image/png")}, timeout=10)
    assert missing.status_code == 422 and missing.json() == {
        "detail": "send the face image as a multipart form field named 'image'."}


def test_a_full_work_queue_is_answered_503_at_once():
    detector = StubDetector()
    detector.release.clear()
    with Running(SETTINGS, detector) as running, ThreadPoolExecutor(4) as pool:
        post = lambda: httpx.post(running.url + "detect", files={"image": ("f.png", png_bytes(), "image/png")},
                                  timeout=15)
        held = [pool.submit(post) for _ in range(2)]
        deadline = time.monotonic() + 10
        while detector.calls < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.2)
        refused = post()
        assert refused.status_code == 503 and "busy" in refused.json()["detail"]
        assert httpx.get(running.url + "health").status_code == 200  # the event loop is free meanwhile
        detector.release.set()
        assert [f.result().status_code for f in held] == [200, 200]


def test_memory_stays_flat_over_200_mixed_uploads(fake_gs):
    uploads = [("good.png", png_bytes(), "image/png", {200, 503}), ("eps.png", eps_bytes(), "image/png", {422, 503}),
               ("strip.png", strip_png(40_000_000, 1), "image/png", {422, 503}),
               ("huge.png", b"\x89PNG" + bytes(MAX + 10), "image/png", {413}),
               ("notes.txt", b"hello", "text/plain", {415, 503}), ("big.png", strip_png(4000, 4000), "image/png",
                                                                    {200, 422, 503})]
    process = psutil.Process()
    with Running(ServiceSettings(max_bytes=MAX, max_pending=8), StubDetector()) as running, \
            ThreadPoolExecutor(16) as pool:
        def send(i):
            name, data, kind, expected = uploads[i % len(uploads)]
            status = httpx.post(running.url + "detect", files={"image": (name, data, kind)}, timeout=30).status_code
            return status in expected, status

        [send(i) for i in range(len(uploads))]  # warm: every path once
        before = process.memory_info().rss
        answers = list(pool.map(send, range(200)))
        grown = process.memory_info().rss - before
    assert all(ok for ok, _ in answers), [s for ok, s in answers if not ok][:10]
    assert grown < 150 * 2**20 and not fake_gs.exists()


def test_the_docs_pages_can_be_left_out():
    """FastAPI's /docs loads its JavaScript from a CDN: `effigy serve --no-docs` serves neither page."""
    from fastapi.testclient import TestClient

    with_docs = TestClient(create_app(ServiceSettings(), StubDetector()))
    without = TestClient(create_app(ServiceSettings(docs=False), StubDetector()))
    assert with_docs.get("/docs").status_code == 200 and with_docs.get("/openapi.json").status_code == 200
    assert without.get("/docs").status_code == 404 and without.get("/openapi.json").status_code == 404
    assert without.get("/health").json()["status"] == "ok"


def _grey_png(level: int) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.full((64, 64, 3), level, np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def test_concurrent_uploads_are_scored_in_one_batch_each_answered_with_its_own_face():
    detector = StubDetector()
    settings = ServiceSettings(max_pending=8, max_wait_s=0.5, max_batch=8, workers=4)
    levels = [10, 60, 110, 160, 210, 250]
    with Running(settings, detector) as running, ThreadPoolExecutor(len(levels)) as pool:
        post = lambda level: httpx.post(running.url + "detect", timeout=15, files={  # noqa: E731
            "image": ("f.png", _grey_png(level), "image/png")}).json()
        answers = list(pool.map(post, levels))
        health = httpx.get(running.url + "health").json()
    assert [a["explanation"] for a in answers] == [f"mean {level / 255:.3f}" for level in levels]
    assert max(detector.batch_sizes) > 1 and health["batches"] == len(detector.batch_sizes) < len(levels)


def test_an_upload_not_answered_in_time_is_a_503_and_the_service_goes_on():
    detector = StubDetector()
    detector.release.clear()
    with Running(ServiceSettings(request_timeout=0.5), detector) as running:
        start = time.monotonic()
        late = httpx.post(running.url + "detect", files={"image": ("f.png", png_bytes(), "image/png")}, timeout=15)
        assert late.status_code == 503 and "not answered within 0.5 s" in late.json()["detail"]
        assert time.monotonic() - start < 5
        detector.release.set()
        assert httpx.post(running.url + "detect", files={"image": ("f.png", png_bytes(), "image/png")},
                          timeout=15).status_code == 200
