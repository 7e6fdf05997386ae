"""A small HTTP service around a shipped deepfake detector: ``POST /detect`` (an image in, JSON out), a
one-page upload form at ``/``, and ``/health``.

Uploads are read up to a size limit and decoded by the face world's image reader, so a file that is too
large, not an image, or of another type gets a 4xx with one clear sentence, never a 500. Their faces are
scored micro-batched with other uploads' (:mod:`effigy.serve.batching`); a full queue or a late answer is a 503.
Nothing is written to disk unless a folder for uploads is given.
"""

import asyncio
import hashlib
import logging
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from effigy.errors import EffigyError

log = logging.getLogger(__name__)

ACCEPTED_TYPES = ("image/png", "image/jpeg", "image/webp", "image/bmp")
PAGE = Path(__file__).with_name("page.html")


@dataclass(frozen=True)
class ServiceSettings:
    """What the service runs and what bounds it: the model, the verdict threshold, the upload limit, the
    client timeouts, the work queue, and where (if anywhere) uploads are kept."""

    model: str = "deepfake-authguard"
    explain: bool = False  # answer with SmolLM2 through deepfake-explainer (deepfake-authguard only)
    threshold: float | None = None  # None: the threshold stored with the model, else 0.5
    max_bytes: int = 5 * 1024 * 1024
    save_dir: Path | None = None
    header_timeout: float = 10.0  # seconds for a client to send a whole request head
    body_timeout: float = 30.0  # seconds for a client to send its whole body
    crops: bool = False  # uploads are face crops already: no face search
    workers: int = 1  # threads decoding uploads and finding their faces (the model runs in the batcher's one)
    max_pending: int = 16  # requests admitted at once; one more is answered 503
    max_batch: int = 16  # most face crops in one model call (micro-batching)
    max_wait_s: float = 0.01  # how long a batch's first upload waits for others to join it
    request_timeout: float = 30.0  # seconds from admission to answer; later is a 503
    docs: bool = True  # FastAPI's /docs and /redoc pages (their JavaScript comes from a CDN)


class Detector:
    """The loaded model (a zoo name or a trained folder, at its recorded operating point), and what explains its
    verdicts (the text encoder, or the LLM); :meth:`score` takes a batch of face crops (the batcher's)."""

    def __init__(self, model_name: str, explain: bool = False) -> None:
        from effigy.detect.deepfake.explain import load_explainer
        from effigy.detect.deepfake.protocol import fact_features
        from effigy.workflows.detectors import DEEPFAKE_TASK, load_detector

        self.name = model_name
        loaded = load_detector(model_name, DEEPFAKE_TASK)
        self.model, self.config = loaded.model, loaded.config
        self.threshold = loaded.operating_threshold()
        if self.config.contrastive != "none" and not explain:
            fact_features()  # the descriptions' text features, embedded once, before the first upload
        self.explainer = load_explainer(model_name)[0] if explain else None

    def __call__(self, image: np.ndarray) -> tuple[float, str]:
        """(P(fake), the explanation: the LLM's answer, or the closest artifact description) of one image
        [3, SIZE, SIZE] in [0, 1]."""
        return self.score(image[None])[0]

    def score(self, batch: np.ndarray) -> list[tuple[float, str]]:
        """(P(fake), explanation) of each face crop of ``batch`` [N, 3, SIZE, SIZE] (one encoder pass)."""
        from effigy.detect.deepfake.protocol import score_and_describe

        p_fake, descriptions = score_and_describe(self.model, batch)
        explanations = self.explainer.answer(batch) if self.explainer is not None else descriptions
        return [(float(p), e) for p, e in zip(p_fake, explanations)]


def create_app(settings: ServiceSettings = ServiceSettings(), detector: Detector | None = None):
    """The FastAPI app (the detector is loaded once, here, unless one is given).

    Args:
        settings: model, threshold, upload limit, upload folder.
        detector: a loaded detector to share (tests build one per session).
    Returns:
        A ``fastapi.FastAPI`` application; run it with uvicorn (``effigy serve``).
    """
    try:
        from fastapi import FastAPI, File, HTTPException, UploadFile
        from fastapi.responses import HTMLResponse
    except ImportError:
        raise EffigyError("the service needs FastAPI: pip install 'effigy[serve]' (fastapi, uvicorn, "
                          "python-multipart).") from None
    from effigy.serve.batching import MicroBatcher
    from effigy.serve.limits import MULTIPART_OVERHEAD, BodyLimit, WorkQueue

    detector = detector or Detector(settings.model, settings.explain)
    threshold = settings.threshold if settings.threshold is not None else getattr(detector, "threshold", 0.5)
    batcher = MicroBatcher(detector.score, settings.max_batch, settings.max_wait_s)

    @asynccontextmanager
    async def lifespan(_app):
        yield
        batcher.close()

    app = FastAPI(title="effigy deepfake detection", version="1", lifespan=lifespan, **({} if settings.docs else
                  {"docs_url": None, "redoc_url": None, "openapi_url": None}))
    app.add_middleware(BodyLimit, max_body=settings.max_bytes + MULTIPART_OVERHEAD, body_timeout=settings.body_timeout)
    _one_sentence_errors(app)
    queue = WorkQueue(settings.workers, settings.max_pending)
    storage = "nothing is stored" if settings.save_dir is None else "uploads are kept on the server"
    page = (PAGE.read_text().replace("{{MAX_MB}}", f"{settings.max_bytes / 2**20:g}")
            .replace("{{MODEL}}", detector.name).replace("{{STORAGE}}", storage))

    @app.get("/", response_class=HTMLResponse)
    def form() -> str:
        return page

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok", "model": detector.name, "pending": queue.pending, **batcher.stats()}

    @app.post("/detect")
    async def detect(image: UploadFile = File(..., description="a face image: PNG, JPEG, WebP or BMP")) -> dict:
        data = await _read_limited(image, settings.max_bytes, HTTPException)
        media_type = _media_type(image.content_type)
        if media_type not in ACCEPTED_TYPES:
            raise HTTPException(415, f"{image.content_type or 'an unnamed type'} is not accepted; upload "
                                     f"{', '.join(t.split('/')[1].upper() for t in ACCEPTED_TYPES)}.")
        if queue.full():
            raise HTTPException(503, f"the service is busy ({queue.max_pending} uploads in progress); retry in a "
                                     "moment.", headers={"Retry-After": "1"})
        try:
            with queue.admitted():
                faces = await asyncio.wait_for(_score(queue, batcher, data, image.filename or "the upload",
                                                      settings.crops), settings.request_timeout)
        except EffigyError as error:
            raise HTTPException(422, str(error)) from None
        except asyncio.TimeoutError:
            raise HTTPException(503, f"the upload was not answered within {settings.request_timeout:g} s (the "
                                     "service is overloaded); retry in a moment.", headers={"Retry-After": "1"}) from None
        if settings.save_dir is not None:
            _keep(settings.save_dir, data, media_type)
        return _answer(faces, threshold, detector.name)

    return app


async def _score(queue, batcher, data: bytes, name: str, crops: bool = False) -> list[tuple[dict, float, str]]:
    """[(where the face is, P(fake), explanation)] of each face in an upload: decoded and searched in the work
    queue's threads, scored in the batcher's next batch; never on the event loop."""
    faces = await queue.run(_find_faces, data, name, crops)
    if not faces:
        return []
    scores = await asyncio.wrap_future(batcher.submit(np.stack([face.image for face in faces])))
    return [(face.to_dict(), p_fake, explanation) for face, (p_fake, explanation) in zip(faces, scores)]


def _find_faces(data: bytes, name: str, crops: bool):
    """Decode (effigy's one decoder: format by the bytes, pixel cap, EXIF orientation) and find the faces."""
    from effigy.detect.faces import find_faces
    from effigy.images import decode_image

    return find_faces(decode_image(data, name), crops)


def _answer(faces: list[tuple[dict, float, str]], threshold: float, model: str) -> dict:
    """The JSON answer: each face's score and verdict, and at the top the most likely fake face's (an image is
    called fake when any face in it is); no face: its own status and no verdict."""
    from effigy.detect.faces import NO_FACE

    rows = [{**where, "p_fake": p_fake, "verdict": "fake" if p_fake >= threshold else "real",
             "explanation": explanation} for where, p_fake, explanation in faces]
    if not rows:
        return {"status": NO_FACE, "detail": "no face found in the upload; send a photo with a frontal face, or "
                "a face crop.", "p_fake": None, "verdict": None, "threshold": threshold, "explanation": None,
                "faces": [], "model": model}
    top = max(rows, key=lambda row: row["p_fake"])
    return {"status": "scored", "p_fake": top["p_fake"], "verdict": top["verdict"], "threshold": threshold,
            "explanation": top["explanation"], "faces": rows, "model": model}


def _media_type(content_type: str | None) -> str:
    """``IMAGE/PNG; charset=binary`` -> ``image/png``: media types are case-insensitive and take parameters."""
    return (content_type or "").split(";")[0].strip().lower()


def _one_sentence_errors(app) -> None:
    """A request the endpoint cannot read (no ``image`` field, not a form) is one sentence, like every other
    4xx, not FastAPI's list of validation records."""
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse

    @app.exception_handler(RequestValidationError)
    async def unreadable(_request, _error) -> JSONResponse:
        return JSONResponse({"detail": "send the face image as a multipart form field named 'image'."}, 422)


async def _read_limited(upload, max_bytes: int, http_error) -> bytes:
    """The upload's bytes (already in memory: :class:`~effigy.serve.limits.BodyLimit` read and bounded the
    body); a 413 when the file itself passes ``max_bytes``, a 422 for an empty file."""
    data = await upload.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise http_error(413, f"the upload is over {max_bytes / 2**20:g} MB; send a smaller face image.")
    if not data:
        raise http_error(422, "the upload is empty; send a face image.")
    return data


def _keep(folder: Path, data: bytes, content_type: str) -> Path:
    """Write an upload under its sha256 (only when the service was asked to keep uploads)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{hashlib.sha256(data).hexdigest()[:16]}.{content_type.split('/')[1]}"
    path.write_bytes(data)
    log.info("kept upload %s", path)
    return path


def bind(host: str, port: int):
    """A listening socket on ``host``:``port``, bound before anything says the service runs; one clear error
    for an empty host, an unknown name or a busy port."""
    import socket

    if not host.strip():
        raise EffigyError("--host is empty; give an interface such as 127.0.0.1 (0.0.0.0 exposes the service).")
    try:
        info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except (socket.gaierror, UnicodeError):
        raise EffigyError(f"--host {host!r} is not an address or a known host name; try 127.0.0.1.") from None
    family, kind, proto, _, address = info
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(128)
    except OSError as error:
        sock.close()
        raise EffigyError(f"cannot listen on {host}:{port} ({error.strerror or error}); is another service using "
                          "it? Pick another --port.") from None
    return sock


def url_of(sock) -> str:
    """``http://HOST:PORT/`` of a bound socket (IPv6 hosts in brackets)."""
    host, port = sock.getsockname()[:2]
    return f"http://{f'[{host}]' if ':' in host else host}:{port}/"


def service_server(app, settings: ServiceSettings):
    """The uvicorn server for ``app`` with its clients bounded: a request head within ``header_timeout``, idle
    keep-alive connections closed after 5 s, at most ``4 * max_pending`` connections and requests at once (more
    are answered 503 by uvicorn). ``server.run(sockets=[sock])`` serves until Ctrl-C or ``should_exit``."""
    import uvicorn

    from effigy.serve.limits import header_timeout_protocol

    config = uvicorn.Config(app, http=header_timeout_protocol(settings.header_timeout), log_level="warning",
                            timeout_keep_alive=5, limit_concurrency=4 * settings.max_pending)
    return uvicorn.Server(config)


def run_service(app, settings: ServiceSettings, sock) -> None:
    """Serve ``app`` on the bound ``sock`` until Ctrl-C (see :func:`service_server`)."""
    service_server(app, settings).run(sockets=[sock])
