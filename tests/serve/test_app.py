import io
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from effigy.serve.app import Detector, ServiceSettings, create_app
from effigy.worlds.deepfakes import render_forgery
from effigy.worlds.faces import real_faces, split_identities

OUTPUT = Path(__file__).resolve().parents[2] / "test_output"


@pytest.fixture(scope="module")
def detector():
    return Detector("deepfake-authguard")


@pytest.fixture(scope="module")
def client(detector):
    return TestClient(create_app(ServiceSettings(max_bytes=200_000), detector))


def _png(family: str = "sbi") -> bytes:
    identities = [int(i) for i in split_identities("test")]
    image, _ = render_forgery(identities[1], real_faces()[identities[1]], family, "phone", 0, 0, identities)
    buffer = io.BytesIO()
    Image.fromarray((image.transpose(1, 2, 0) * 255).astype(np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def test_a_good_upload_gets_a_verdict_score_and_explanation(client, detector, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    response = client.post("/detect", files={"image": ("face.png", _png(), "image/png")})
    assert response.status_code == 200
    answer = response.json()
    assert 0 <= answer["p_fake"] <= 1 and answer["verdict"] == ("fake" if answer["p_fake"] >= answer["threshold"] else "real")
    assert answer["explanation"] and answer["model"] == "deepfake-authguard"
    assert list(tmp_path.iterdir()) == []  # nothing written unless asked
    kept = tmp_path / "kept"
    keeping = TestClient(create_app(ServiceSettings(save_dir=kept), detector))
    assert keeping.post("/detect", files={"image": ("face.png", _png(), "image/png")}).status_code == 200
    assert len(list(kept.iterdir())) == 1


def test_a_photo_has_each_face_scored_and_one_without_a_face_gets_no_verdict(client):
    from skimage import data

    from tests.detect.test_faces import no_face_photo

    for photo, name in ((Image.fromarray(data.astronaut()), "astronaut.jpg"), (no_face_photo(), "fields.jpg")):
        buffer = io.BytesIO()
        photo.save(buffer, "JPEG", quality=90)  # under the test service's 200 kB limit
        response = client.post("/detect", files={"image": (name, buffer.getvalue(), "image/jpeg")})
        assert response.status_code == 200
        answer = response.json()
        if name == "astronaut.jpg":
            assert answer["status"] == "scored" and len(answer["faces"]) == 1 and answer["faces"][0]["box"]["side"] > 60
            assert answer["p_fake"] == answer["faces"][0]["p_fake"]
        else:
            assert answer["status"] == "no face found" and answer["verdict"] is None and "no face" in answer["detail"]


@pytest.mark.parametrize("name, data, content_type, status, words", [
    ("notes.txt", b"hello", "text/plain", 415, "not accepted"),
    ("face.png", b"not a png at all", "image/png", 422, "not a readable image"),
    ("face.png", b"", "image/png", 422, "empty"),
    ("big.png", b"\x89PNG" + bytes(300_000), "image/png", 413, "over"),
])
def test_bad_uploads_get_a_4xx_with_a_clear_message(client, name, data, content_type, status, words):
    response = client.post("/detect", files={"image": (name, data, content_type)})
    assert response.status_code == status and words in response.json()["detail"]


def test_a_request_without_a_file_is_a_4xx_and_the_page_and_health_answer(client):
    assert client.post("/detect").status_code == 422
    page = client.get("/")
    assert page.status_code == 200 and 'type="file"' in page.text and "deepfake-authguard" in page.text
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["model"] == "deepfake-authguard" and health["pending"] == 0


@pytest.mark.slow
def test_the_page_in_headless_chromium(detector, tmp_path):
    """The upload form driven by the system Chromium (apt's `chromium`; playwright downloads no browser):
    a face uploaded, the verdict shown; the screenshot is kept in test_output/."""
    import uvicorn
    from playwright.sync_api import sync_playwright

    executable = "/usr/bin/chromium"
    assert Path(executable).exists(), "install Chromium first: apt-get install chromium"
    server = uvicorn.Server(uvicorn.Config(create_app(ServiceSettings(), detector), host="127.0.0.1", port=8765,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    upload = tmp_path / "face.png"
    upload.write_bytes(_png("swap"))
    OUTPUT.mkdir(exist_ok=True)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=executable, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 800, "height": 640})
            page.goto("http://127.0.0.1:8765/")
            page.set_input_files("#image", str(upload))
            page.click("button[type=submit]")
            page.wait_for_selector(".verdict")
            text = page.inner_text("#result")
            page.screenshot(path=str(OUTPUT / "serve_page.png"), full_page=True)
            browser.close()
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    assert "Likely" in text and "P(fake)" in text
    assert (OUTPUT / "serve_page.png").stat().st_size > 10_000


def test_with_the_llm_explainer_the_answer_is_the_llms(detector):
    from effigy.detect.deepfake.explain import verdict_of

    explaining = TestClient(create_app(ServiceSettings(explain=True)))
    answer = explaining.post("/detect", files={"image": ("face.png", _png("swap"), "image/png")}).json()
    assert verdict_of(answer["explanation"]) in ("real", "fake", "unclear") and len(answer["explanation"]) > 10
