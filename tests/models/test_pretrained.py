import json

import pytest
import torch

from effigy.errors import CheckpointError
from effigy.models.pretrained import load_pretrained


def test_from_pretrained_on_a_local_diffusers_folder(tiny_dit, tmp_path):
    tiny_dit.save_pretrained(tmp_path, safe_serialization=True)
    loaded = load_pretrained(str(tmp_path))
    for name, value in tiny_dit.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value)


def test_pickle_only_folder_is_refused(tiny_dit, tmp_path):
    tiny_dit.save_pretrained(tmp_path, safe_serialization=False)
    with pytest.raises(CheckpointError, match="safetensors"):
        load_pretrained(str(tmp_path))


def test_bad_paths_and_classes(tmp_path):
    with pytest.raises(CheckpointError, match="no config.json"):
        load_pretrained(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"_class_name": "Popen"}))
    with pytest.raises(CheckpointError, match="not a diffusers model"):
        load_pretrained(str(tmp_path))
    for missing in ("no-such-model", "/no/such/folder", "./relative"):
        with pytest.raises(CheckpointError, match="neither a model folder nor a hub id"):
            load_pretrained(missing)
