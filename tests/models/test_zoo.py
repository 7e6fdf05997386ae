import json
import shutil

import numpy as np
import pytest
import torch

from effigy.errors import CheckpointError
from effigy.models.generators import dit_digits
from effigy.models.judges import digit_classifier
from effigy.models.zoo import WEIGHTS_DIR, load_zoo_model, read_manifest, sha256_of, train_zoo_model


def test_manifest_pins_the_sha256_of_every_shipped_file():
    manifest = read_manifest()
    assert {"dit-digits", "digits-classifier"} <= set(manifest)
    for record in manifest.values():
        assert sha256_of(WEIGHTS_DIR / record["file"]) == record["sha256"]


def test_a_changed_weight_file_is_refused(tmp_path):
    for item in WEIGHTS_DIR.iterdir():
        shutil.copy(item, tmp_path / item.name)
    target = tmp_path / "digits-classifier.safetensors"
    data = bytearray(target.read_bytes())
    data[-1] ^= 0xFF
    target.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupt or was replaced"):
        load_zoo_model("digits-classifier", tmp_path)


def _copied_weights(tmp_path):
    for item in WEIGHTS_DIR.iterdir():
        if item.is_file():
            shutil.copy(item, tmp_path / item.name)
    return json.loads((tmp_path / "MANIFEST.json").read_text())


@pytest.mark.parametrize("change, words", [
    (lambda m, d: m["digits-classifier"].pop("file"), "needs 'file' and 'sha256'"),
    (lambda m, d: m["digits-classifier"].pop("sha256"), "needs 'file' and 'sha256'"),
    (lambda m, d: m.update({"digits-classifier": "digits-classifier.safetensors"}), "needs 'file' and 'sha256'"),
    (lambda m, d: m["digits-classifier"].update(file="../../x.safetensors"), "not a plain file name"),
    (lambda m, d: (m["digits-classifier"].update(file="folder"), (d / "folder").mkdir()), "a folder"),
    (lambda m, d: m["digits-classifier"].pop("config"), "no config"),
    # training configs go through the typed serialiser: an unknown key, a wrong type, another class's tag
    (lambda m, d: m["digits-classifier"]["config"].update(dropout=0.5), "unknown ClassifierConfig fields"),
    (lambda m, d: m["digits-classifier"]["config"].update(seed="zero"), "ClassifierConfig.seed must be int"),
    (lambda m, d: m["digits-classifier"]["config"].update(format="effigy-train-config/FASConfig/1"),
     "not a ClassifierConfig file"),
])
def test_a_damaged_manifest_record_is_one_clear_error(tmp_path, change, words):
    manifest = _copied_weights(tmp_path)
    change(manifest, tmp_path)
    (tmp_path / "MANIFEST.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match=words):
        load_zoo_model("digits-classifier", tmp_path)


def test_nan_weights_behind_a_matching_sha256_are_refused(tmp_path):
    from safetensors.torch import load_file, save_file

    manifest = _copied_weights(tmp_path)
    path = tmp_path / "digits-classifier.safetensors"
    tensors = load_file(str(path))
    first = next(k for k, v in tensors.items() if v.is_floating_point())
    tensors[first].view(-1)[0] = float("nan")
    save_file(tensors, str(path))
    manifest["digits-classifier"]["sha256"] = sha256_of(path)
    (tmp_path / "MANIFEST.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="NaN or infinite"):
        load_zoo_model("digits-classifier", tmp_path)


def test_unknown_and_untrained_models(tmp_path):
    with pytest.raises(CheckpointError, match="unknown zoo model"):
        load_zoo_model("sd-xl")
    with pytest.raises(CheckpointError, match="effigy zoo train dit-digits"):
        load_zoo_model("dit-digits", tmp_path)


def test_shipped_classifier_reads_held_out_digits():
    model, config = load_zoo_model("digits-classifier")
    assert digit_classifier.heldout_accuracy(model, config) >= 0.97


def test_shipped_dit_draws_the_requested_digits():
    """The issue's bar is >= 90% over many samples (see benchmarks/results); a small quick check here."""
    dit, config = load_zoo_model("dit-digits")
    classifier, _ = load_zoo_model("digits-classifier")
    labels = torch.arange(10).repeat_interleave(3)
    images = dit_digits.sample(dit, config, labels, num_steps=20, seed=123)
    assert (classifier(images).argmax(1) == labels).float().mean() >= 0.85


def test_shipped_face_dit_draws_varied_face_like_crops():
    """Generated crops match the mean training face about as unseen real crops do, and are not one face."""
    from effigy.models.generators import dit_faces
    from effigy.worlds.faces import real_faces, split_identities

    dit, config = load_zoo_model("dit-faces")
    crops = dit_faces.generate_faces(dit, config, 16, seed=5)
    assert crops.shape == (16, 25, 25) and crops.min() >= 0 and crops.max() <= 1
    standard = lambda x: (x - x.mean((-2, -1), keepdims=True)) / x.std((-2, -1), keepdims=True)  # noqa: E731
    template = standard(real_faces()[split_identities("train")].mean(0))
    unseen_real = real_faces()[split_identities("test")]
    assert np.median((standard(crops) * template).mean((1, 2))) > np.median((standard(unseen_real) * template).mean((1, 2))) - 0.15
    assert crops.std(axis=0).mean() > 0.5 * unseen_real.std(axis=0).mean()


@pytest.mark.parametrize("name", ["digits-classifier", "dit-digits", "dit-faces"])
def test_training_command_is_seeded_and_writes_a_loadable_record(tmp_path, name):
    first = train_zoo_model(name, tmp_path / "a", train_steps=3, batch_size=8)
    second = train_zoo_model(name, tmp_path / "b", train_steps=3, batch_size=8)
    assert sha256_of(first) == sha256_of(second)
    model, config = load_zoo_model(name, tmp_path / "a")
    assert config.train_steps == 3


def test_the_spbn_detector_training_command_is_seeded(tmp_path):
    """``effigy zoo train lidar-centerpoint-spbn`` (a few steps on a few frames): the same seed, the same bytes, on
    one thread (on more, the sparse layers' scatter-adds sum in thread order and the last bits differ)."""
    from effigy.nn.sparse_norm import SparsityPreservingBatchNorm

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    short = {"train_steps": 2, "train_frames": 3, "checkpoint_every": 1}
    try:
        first = train_zoo_model("lidar-centerpoint-spbn", tmp_path / "a", **short)
        second = train_zoo_model("lidar-centerpoint-spbn", tmp_path / "b", **short)
    finally:
        torch.set_num_threads(threads)
    assert sha256_of(first) == sha256_of(second)
    model, config = load_zoo_model("lidar-centerpoint-spbn", tmp_path / "a")
    assert config.norm_2d == "sparsity-preserving" and config.train_steps == 2
    assert any(isinstance(m, SparsityPreservingBatchNorm) for m in model.backbone_2d.modules())


def test_training_output_folder_may_be_a_string(tmp_path):
    path = train_zoo_model("digits-classifier", str(tmp_path / "as-text"), train_steps=2, batch_size=8)
    assert path.exists() and (tmp_path / "as-text" / "MANIFEST.json").exists()


@pytest.mark.slow
def test_full_dit_training_reproduces_a_recognisable_model(tmp_path):
    train_zoo_model("dit-digits", tmp_path)
    dit, config = load_zoo_model("dit-digits", tmp_path)
    classifier, _ = load_zoo_model("digits-classifier")
    labels = torch.arange(10).repeat_interleave(10)
    images = dit_digits.sample(dit, config, labels, seed=1)
    assert (classifier(images).argmax(1) == labels).float().mean() >= 0.9


@torch.no_grad()
def test_shipped_var_reconstructs_and_draws_recognisable_digits():
    from effigy.evaluate.suites import VAR_TOP_K, class_labels
    from effigy.models.var.tokenizer import codebook_usage
    from effigy.worlds.digits import load_digits_images, split_indices

    tokenizer, config = load_zoo_model("var-digits-vqvae")
    images, _ = load_digits_images(config.image_size)
    usage = codebook_usage(tokenizer, images[split_indices(len(images))[1]])
    assert usage.psnr > 30 and usage.codes_used[-1] > 100
    var, _ = load_zoo_model("var-digits")
    classifier, _ = load_zoo_model("digits-classifier")
    labels = class_labels(4)
    samples = var.generate(tokenizer, labels, guidance_scale=3.0, top_k=VAR_TOP_K, seed=7)
    assert (classifier(samples).argmax(1) == labels).float().mean() >= 0.8


@torch.no_grad()
def test_shipped_lidar_detector_and_ada3d_find_the_cars_of_unseen_frames():
    from effigy.lidar.ada3d import Ada3D, Ada3DConfig
    from effigy.models.lidar.train import detect, evaluate_detections, simulate_split

    frames = simulate_split("test", 6, workers=1)
    detector, config = load_zoo_model("lidar-centerpoint")
    dense = evaluate_detections(detect(detector, frames), frames, config.classes)
    assert dense["distance"]["Car"] > 0.9 and dense["iou"]["Car"] > 0.5
    ada3d, _ = load_zoo_model("lidar-ada3d")
    model = Ada3D(ada3d.detector, Ada3DConfig(0.6, 0.3), ada3d.predictor).eval()
    filtered = evaluate_detections(detect(model.detector, frames, forward=model), frames, config.classes)
    assert filtered["distance"]["Car"] > 0.9 and model.tally.voxels_kept < 0.75 * model.tally.voxels_in
    spbn, _ = load_zoo_model("lidar-ada3d-spbn")
    assert spbn.detector.config.norm_2d == "sparsity-preserving"
    filtered = evaluate_detections(detect(spbn.detector, frames, forward=spbn), frames, config.classes)  # its own keeps
    assert filtered["distance"]["Car"] > 0.9 and filtered["iou"]["Car"] > 0.5


def test_shipped_face_model_tells_live_from_spoof_on_unseen_identities_and_held_out_faces():
    from effigy.detect.fas.protocol import held_out_captures
    from effigy.metrics.detection import auc
    from effigy.worlds.faces import render

    model, config = load_zoo_model("fas-protonet")
    test = render("test", ["phone", "kiosk"], live_per_identity=1, spoofs_per_attack=1)
    with torch.no_grad():
        assert auc(model(torch.from_numpy(test.images)).numpy(), test.live) > 0.95
        held = held_out_captures("astronaut", live=2)
        scores = model(torch.from_numpy(held.images)).numpy()
    assert scores[held.live].mean() > 0.5 > scores[~held.live].mean()
    for domain in config.domains:
        _, without = load_zoo_model(f"fas-protonet-without-{domain}")
        assert domain not in without.domains and len(without.domains) == 3
    for attack in config.attacks:
        _, without = load_zoo_model(f"fas-protonet-without-{attack}")
        assert attack not in without.attacks and len(without.attacks) == 2 and len(without.domains) == 4


def test_every_zoo_entry_loads_in_a_fresh_interpreter_whatever_was_imported_before():
    """No registration by import: each declared name resolves from a bare ``effigy.models.zoo`` (a fresh
    interpreter per provider, whose first lookup imports it), and every model with
    shipped weights loads."""
    import subprocess
    import sys

    from effigy.models.zoo import DECLARED

    script = (
        "import sys\n"
        "from effigy.models.zoo import ZOO, load_zoo_model, read_manifest\n"
        "shipped = read_manifest()\n"
        "for name in sys.argv[1:]:\n"
        "    entry = ZOO.get(name)\n"
        "    assert entry.name == name\n"
        "    if name in shipped:\n"
        "        load_zoo_model(name)\n"
        "print('ok', len(sys.argv) - 1)\n")
    by_provider: dict[str, list[str]] = {}
    for name, (_, where) in DECLARED.items():
        by_provider.setdefault(where, []).append(name)
    for names in by_provider.values():
        done = subprocess.run([sys.executable, "-c", script, *names], capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stdout.strip() == f"ok {len(names)}"


def test_each_provider_defines_exactly_the_names_declared_for_it():
    import importlib

    from effigy.models.zoo import DECLARED, HERE, TASKS, ZOO

    providers = {where for _, where in DECLARED.values() if where != HERE}
    for where in providers:
        module, function = where.split(":")
        defined = {entry.name for entry in getattr(importlib.import_module(module), function)()}
        assert defined == {name for name, (_, w) in DECLARED.items() if w == where}
    assert all(task in TASKS for task, _ in DECLARED.values())
    assert "fas-protonet-without-kiosk" in ZOO.names("face-antispoofing")
    assert ZOO.names("deepfake") == ("deepfake-authguard", "deepfake-ce", "deepfake-clip")
    assert ZOO.task("shapes-clip") == "judge" and "lidar-ada3d" in ZOO.names("lidar")
    with pytest.raises(CheckpointError, match="effigy zoo list"):
        ZOO.get("fas-protonet-typo-and-much-longer")


def test_every_shipped_training_config_round_trips_with_its_format_tag():
    from effigy.models.zoo import ZOO

    manifest = read_manifest()
    for name in ZOO.names():
        config_cls = ZOO.get(name).config_cls
        config = config_cls.from_dict(manifest[name]["config"])  # shipped records are untagged
        written = config.to_dict()
        assert written["format"] == f"effigy-train-config/{config_cls.__name__}/1"
        assert config_cls.from_dict(json.loads(json.dumps(written))) == config
