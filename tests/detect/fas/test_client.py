import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from effigy.detect.fas.adapt import ClientHead, SourceView
from effigy.detect.fas.client import (
    _check_head,
    _keeps_base_order,
    labelled_faces,
    load_adapted,
    read_face_folder,
    save_adapted,
)
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


def _base(dim=16):
    return SourceView(torch.nn.functional.normalize(torch.randn(2, 4, dim), dim=-1), 16.0)


def _saved_head(tmp_path, base, weight=True, sha="abc"):
    prototypes = torch.nn.functional.normalize(base.prototypes + 0.05 * torch.randn_like(base.prototypes), dim=-1)
    layer = (0.1 * torch.randn(16, 16), 0.1 * torch.randn(16)) if weight else (None, None)
    head = ClientHead(prototypes, base.scale, *layer)
    path, sidecar = save_adapted(tmp_path / "a.safetensors", head, {"model": "fas-protonet", "model_sha256": sha})
    return head, path, sidecar


def test_adapted_head_round_trip_and_refuse_another_model(tmp_path):
    base = _base()
    head, path, sidecar = _saved_head(tmp_path, base)
    assert json.loads(sidecar.read_text())["format"] == "effigy-fas-head"
    loaded = load_adapted(path, "fas-protonet", base, "abc")
    features = torch.nn.functional.normalize(torch.randn(5, 16), dim=1)
    torch.testing.assert_close(loaded(features), head(features))
    assert not torch.allclose(head(features), ClientHead(head.prototypes, 16.0)(features))  # the layer counts
    with pytest.raises(CheckpointError, match="not 'fas-protonet-without-kiosk'"):
        load_adapted(path, "fas-protonet-without-kiosk", base, "abc")
    with pytest.raises(CheckpointError, match="other fas-protonet weights"):
        load_adapted(path, "fas-protonet", base, "def")
    with pytest.raises(CheckpointError, match="2, centres, 32"):
        load_adapted(path, "fas-protonet", _base(32), "abc")
    with pytest.raises(CheckpointError, match="safetensors"):
        save_adapted(tmp_path / "a.pt", head, {"model": "fas-protonet"})
    assert list(tmp_path.glob("*.partial")) == []


def _tampered(path, change):
    """Rewrite the head's tensors and its recorded sha256, as an attacker who knows the format would."""
    from effigy.checkpoint.files import sha256_of

    tensors = load_file(str(path))
    change(tensors)
    save_file(tensors, str(path))
    record = json.loads(path.with_suffix(".json").read_text())
    record["sha256"] = sha256_of(path)
    path.with_suffix(".json").write_text(json.dumps(record))


@pytest.mark.parametrize("change, words", [
    (lambda t: t.update(prototypes=t["prototypes"].flip(0).contiguous()), "swapped"),
    (lambda t: t["prototypes"].view(-1)[3].fill_(float("nan")), "NaN or infinite"),
    (lambda t: t["weight"].fill_(float("inf")), "NaN or infinite"),
    (lambda t: t.update(prototypes=t["prototypes"].double()), "float32"),
    (lambda t: t["prototypes"][1, 0].zero_(), "zero prototype"),
    (lambda t: t.pop("bias"), "damaged feature layer"),
    (lambda t: t.update(extra=torch.zeros(2)), "unknown tensors"),
])
def test_a_tampered_head_is_refused_even_with_a_matching_digest(tmp_path, change, words):
    base = _base()
    _, path, _ = _saved_head(tmp_path, base)
    _tampered(path, change)
    with pytest.raises(CheckpointError, match=words):
        load_adapted(path, "fas-protonet", base, "abc")


@pytest.mark.parametrize("scale", [-16.0, float("nan"), float("inf"), 0.0, 32.0, "16"])
def test_a_scale_other_than_the_base_models_is_refused(tmp_path, scale):
    base = _base()
    _, path, sidecar = _saved_head(tmp_path, base)
    record = json.loads(sidecar.read_text())
    record["scale"] = scale
    sidecar.write_text(json.dumps(record))
    with pytest.raises(CheckpointError, match="base model's 16"):
        load_adapted(path, "fas-protonet", base, "abc")


def test_a_changed_file_an_old_record_or_a_pickle_is_refused(tmp_path):
    base = _base()
    _, path, sidecar = _saved_head(tmp_path, base, weight=False)
    data = bytearray(path.read_bytes())
    data[-3] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="does not match the sha256"):
        load_adapted(path, "fas-protonet", base, "abc")
    record = json.loads(sidecar.read_text())
    sidecar.write_text(json.dumps({**record, "version": 2}))
    with pytest.raises(CheckpointError, match="another effigy version"):
        load_adapted(path, "fas-protonet", base, "abc")
    sidecar.write_text(json.dumps(record))
    path.write_bytes(b"\x80\x04garbage")  # a pickle is never opened
    with pytest.raises(CheckpointError, match="sha256"):
        load_adapted(path, "fas-protonet", base, "abc")


def test_every_adaptor_writes_a_head_that_loads_against_its_base():
    """The class-alignment and scale checks refuse no honest adaptor's head (on the world's webcam crops)."""
    import effigy.detect.fas  # noqa: F401
    from effigy.cli.detect import ADAPTORS, _adaptor
    from effigy.detect.fas.model import embed
    from effigy.models.zoo import load_zoo_model
    from effigy.worlds.faces import render

    model, config = load_zoo_model("fas-protonet-without-webcam")
    data = render("dev", ["webcam"], config.attacks)
    keep = np.r_[np.flatnonzero(data.live)[:6], np.flatnonzero(~data.live)[:6]]
    features = embed(model, data.images[keep])
    labels = torch.from_numpy(data.live[keep].astype(np.int64))
    source = SourceView(model.prototypes().detach(), config.scale)
    for key in ADAPTORS:
        adaptor = _adaptor(key)
        rows = labels == 1 if adaptor.one_class else torch.ones(len(labels), dtype=torch.bool)
        head = adaptor.fit(source, features[rows], labels[rows] if adaptor.uses_labels else None)
        _check_head("head", head.tensors(), source.prototypes)
        assert head.scale == config.scale and _keeps_base_order(head, source.prototypes), key
        swapped = ClientHead(head.prototypes.flip(0), head.scale, head.weight, head.bias)
        assert not _keeps_base_order(swapped, source.prototypes), key
