"""A small HTTP service around a shipped deepfake detector: ``POST /detect`` (an image in, JSON out), a
one-page upload form at ``/``, and ``/health``.

Uploads are read up to a size limit and decoded by the face world's image reader, so a file that is too
large, not an image, or of another type gets a 4xx with one clear sentence, never a 500. Nothing is written
to disk unless a folder for uploads is given.
"""

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from effigy.errors import EffigyError

log = logging.getLogger(__name__)

ACCEPTED_TYPES = ("image/png", "image/jpeg", "image/webp", "image/bmp")
PAGE = Path(__file__).with_name("page.html")


@dataclass(frozen=True)
class ServiceSettings:
    """What the service runs: the model, the verdict threshold, the upload limit, and where (if anywhere)
    uploads are kept."""

    model: str = "deepfake-authguard"
    explain: bool = False  # answer with SmolLM2 through deepfake-explainer (deepfake-authguard only)
    threshold: float = 0.5
    max_bytes: int = 5 * 1024 * 1024
    save_dir: Path | None = None


class Detector:
    """The loaded model, and what explains its verdicts (the text encoder, or the LLM), scoring one decoded
    image at a time."""

    def __init__(self, model_name: str, explain: bool = False) -> None:
        import effigy.detect.deepfake  # noqa: F401  (registers the models)
        from effigy.detect.deepfake.explain import load_explainer
        from effigy.detect.deepfake.protocol import fact_features
        from effigy.models.zoo import load_zoo_model

        self.name = model_name
        self.model, self.config = load_zoo_model(model_name)
        if self.config.contrastive != "none" and not explain:
            fact_features()  # the descriptions' text features, embedded once, before the first upload
        self.explainer = load_explainer(model_name)[0] if explain else None

    def __call__(self, image: np.ndarray) -> tuple[float, str]:
        """(P(fake), the explanation: the LLM's answer, or the closest artifact description) of one image
        [3, SIZE, SIZE] in [0, 1]."""
        from effigy.detect.deepfake.model import fake_scores
        from effigy.detect.deepfake.protocol import describe

        batch = image[None]
        p_fake = float(fake_scores(self.model, batch)[0])
        if self.explainer is not None:
            return p_fake, self.explainer.answer(batch)[0]
        return p_fake, describe(self.model, batch)[0]


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
    detector = detector or Detector(settings.model, settings.explain)
    app = FastAPI(title="effigy deepfake detection", version="1")
    storage = "nothing is stored" if settings.save_dir is None else "uploads are kept on the server"
    page = (PAGE.read_text().replace("{{MAX_MB}}", f"{settings.max_bytes / 2**20:g}")
            .replace("{{MODEL}}", detector.name).replace("{{STORAGE}}", storage))

    @app.get("/", response_class=HTMLResponse)
    def form() -> str:
        return page

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok", "model": detector.name}

    @app.post("/detect")
    async def detect(image: UploadFile = File(..., description="a face image: PNG, JPEG, WebP or BMP")) -> dict:
        data = await _read_limited(image, settings.max_bytes, HTTPException)
        if image.content_type not in ACCEPTED_TYPES:
            raise HTTPException(415, f"{image.content_type or 'an unnamed type'} is not accepted; upload "
                                     f"{', '.join(t.split('/')[1].upper() for t in ACCEPTED_TYPES)}.")
        from effigy.worlds.faces import decode_face_image

        try:
            decoded = decode_face_image(data, image.filename or "the upload")
        except EffigyError as error:
            raise HTTPException(422, str(error)) from None
        p_fake, explanation = detector(decoded)
        if settings.save_dir is not None:
            _keep(settings.save_dir, data, image.content_type)
        verdict = "fake" if p_fake >= settings.threshold else "real"
        return {"p_fake": p_fake, "verdict": verdict, "threshold": settings.threshold, "explanation": explanation,
                "model": detector.name}

    return app


async def _read_limited(upload, max_bytes: int, http_error) -> bytes:
    """The upload's bytes; a 413 as soon as they pass ``max_bytes``, a 422 for an empty file."""
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
