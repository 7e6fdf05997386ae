"""The saved training state pairs its tensors with the step that made them in one file, so an interrupt between
the two files' renames cannot resume new weights at an old step (or old weights at a new one)."""
import json
import shutil

import torch
from torch import nn

from effigy.models.training_state import META_FILE, STATE_FILE, resume_training_state, save_training_state


def _state(seed):
    torch.manual_seed(seed)
    model = nn.Linear(3, 2)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    return model, optimizer, torch.Generator().manual_seed(seed)


def test_the_tensors_file_carries_its_own_step(tmp_path):
    config = {"lr": 0.1}
    model, optimizer, generator = _state(0)
    save_training_state(tmp_path / "old", 3, {"model": model}, optimizer, generator, config)
    model, optimizer, generator = _state(1)
    save_training_state(tmp_path / "new", 5, {"model": model}, optimizer, generator, config)
    # an interrupt after the tensors were renamed into place but before the JSON was: new tensors, old JSON
    torn = tmp_path / "torn"
    shutil.copytree(tmp_path / "old", torn)
    shutil.copy(tmp_path / "new" / STATE_FILE, torn / STATE_FILE)
    assert json.loads((torn / META_FILE).read_text())["step"] == 3
    restored, optimizer, generator = _state(2)
    assert resume_training_state(torn, {"model": restored}, optimizer, generator, config) == 5
    assert torch.equal(restored.weight, model.weight)  # the step and the tensors belong together
    (torn / META_FILE).unlink()  # the tensors file alone is a whole state
    assert resume_training_state(torn, {"model": restored}, optimizer, generator, config) == 5


def test_an_interrupted_write_leaves_the_old_file_whole(tmp_path):
    from effigy.checkpoint.files import replaced_atomically

    target = tmp_path / "state.json"
    target.write_text("old")
    try:
        with replaced_atomically(target) as partial:
            partial.write_text("half")
            raise KeyboardInterrupt
    except KeyboardInterrupt:
        pass
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]
    with replaced_atomically(target) as partial:
        partial.write_text("new")
    assert target.read_text() == "new"
