import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from effigy.detect.fas.adapt import ClientHead
from effigy.detect.fas.client import labelled_faces, load_adapted, read_face_folder, save_adapted
from effigy.errors import AdaptationError, CheckpointError, WorldError
from effigy.worlds.faces import real_faces, render_capture


def _write(folder, kind, count):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        image = render_capture(real_faces()[i], i, kind, "webcam", 0)
        Image.fromarray((image.transpose(1, 2, 0) * 255).astype(np.uint8)).save(folder / f"{i}.png")
    (folder / "notes.txt").write_text("not an image")  # other files are ignored


def test_labelled_faces_read_both_folders(tmp_path):
    _write(tmp_path / "live", "live", 3)
    _write(tmp_path / "spoof", "print", 2)
    images, live = labelled_faces(tmp_path / "live", tmp_path / "spoof")
    assert images.shape == (5, 3, 64, 64) and live.tolist() == [True] * 3 + [False] * 2
    with pytest.raises(AdaptationError, match="not a folder"):
        read_face_folder(tmp_path / "none")
    (tmp_path / "empty").mkdir()
    with pytest.raises(WorldError, match="holds no images"):
        read_face_folder(tmp_path / "empty")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "a.png").write_bytes(b"not a png")
    with pytest.raises(WorldError, match="not a readable image"):
        read_face_folder(tmp_path / "broken")


def test_adapted_head_round_trip_and_refuse_another_model(tmp_path):
    prototypes = torch.nn.functional.normalize(torch.randn(2, 4, 16), dim=-1)
    head = ClientHead(prototypes, 16.0, 0.1 * torch.randn(16, 16), 0.1 * torch.randn(16))
    path, sidecar = save_adapted(tmp_path / "a.safetensors", head, {"model": "fas-protonet"})
    assert json.loads(sidecar.read_text())["format"] == "effigy-fas-head"
    loaded = load_adapted(path, "fas-protonet", 16)
    features = torch.nn.functional.normalize(torch.randn(5, 16), dim=1)
    torch.testing.assert_close(loaded(features), head(features))
    assert not torch.allclose(head(features), ClientHead(prototypes, 16.0)(features))  # the layer counts
    with pytest.raises(CheckpointError, match="not 'fas-protonet-without-kiosk'"):
        load_adapted(path, "fas-protonet-without-kiosk", 16)
    with pytest.raises(CheckpointError, match="32"):
        load_adapted(path, "fas-protonet", 32)
    save_file({"prototypes": prototypes, "weight": torch.zeros(16, 16)}, str(path))  # a layer without its bias
    with pytest.raises(CheckpointError, match="damaged feature layer"):
        load_adapted(path, "fas-protonet", 16)
    path.write_bytes(b"\x80\x04garbage")  # a pickle is never opened
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_adapted(path, "fas-protonet", 16)
    with pytest.raises(CheckpointError, match="safetensors"):
        save_adapted(tmp_path / "a.pt", head, {"model": "fas-protonet"})
