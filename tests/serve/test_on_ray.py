"""Scale-out on Ray, on a local Ray instance: `effigy serve --ray` answers the same JSON as `effigy serve`, and
`effigy detect deepfake eval --ray` reports what the local scoring reports. Slow: Ray starts its own processes."""
import json
import socket

import httpx
import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def local_ray():
    from effigy.cluster import ray_session

    with ray_session(local_cpus=2) as ray:
        yield ray


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_serve_on_ray_answers_the_same_json_as_the_local_service(local_ray):
    from fastapi.testclient import TestClient
    from ray import serve
    from skimage import data

    from effigy.serve.app import ServiceSettings, create_app
    from effigy.serve.on_ray import deploy
    from tests.serve.test_app import _png

    settings = ServiceSettings()
    url = deploy(settings, "127.0.0.1", _free_port(), replicas=1)
    try:
        local = TestClient(create_app(settings))
        import io

        from PIL import Image

        photo = io.BytesIO()
        Image.fromarray(data.astronaut()).save(photo, "JPEG", quality=90)
        for name, body, kind in (("face.png", _png(), "image/png"), ("astronaut.jpg", photo.getvalue(), "image/jpeg"),
                                 ("notes.txt", b"hello", "text/plain")):
            on_ray = httpx.post(url + "detect", files={"image": (name, body, kind)}, timeout=60)
            here = local.post("/detect", files={"image": (name, body, kind)})
            assert on_ray.status_code == here.status_code
            assert on_ray.json() == pytest.approx(here.json()) if on_ray.status_code != 200 else _same(on_ray.json(),
                                                                                                      here.json())
        assert httpx.get(url + "health", timeout=30).json()["model"] == "deepfake-authguard"
    finally:
        serve.shutdown()


def _same(a: dict, b: dict) -> bool:
    assert a.keys() == b.keys() and a["verdict"] == b["verdict"] and a["explanation"] == b["explanation"]
    assert abs(a["p_fake"] - b["p_fake"]) < 1e-5 and len(a["faces"]) == len(b["faces"])
    return True


def test_eval_on_ray_reports_what_local_scoring_reports(local_ray, tmp_path, monkeypatch, capsys):
    from tests.detect.deepfake.test_datasets import _save
    from tests.test_cli import run_cli

    for i in range(3):
        _save(tmp_path / "team" / "test" / "real" / f"r{i}.png", "real", i)
        _save(tmp_path / "team" / "test" / "fake" / "sbi" / f"s{i}.png", "sbi", i)
    args = ["detect", "deepfake", "eval", "--data", str(tmp_path / "team"), "--crops", "--json"]
    code, here, err = run_cli(monkeypatch, capsys, *args)
    assert code == 0, err
    code, on_ray, err = run_cli(monkeypatch, capsys, *args, "--ray")
    assert code == 0, err
    assert json.loads(on_ray)["all"] == pytest.approx(json.loads(here)["all"])
