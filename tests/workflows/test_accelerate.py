"""``effigy accelerate --model DIR``: a DiTFastAttn plan calibrated by running a user's pipeline folder."""
import json

import pytest

from effigy.attention import AttentionPlan
from tests.test_cli import run_cli


def _accelerate_cli(monkeypatch, capsys, *args):
    return run_cli(monkeypatch, capsys, "accelerate", *args, "--json")


@pytest.mark.parametrize("folder, prompts", [("pixart_pipeline_folder", "a red circle\nblue square on the left\n"),
                                             ("dit_pipeline_folder", "3\n7\n")])
def test_a_ditfastattn_plan_is_calibrated_on_a_pipeline_folder_and_applied(request, folder, prompts, monkeypatch,
                                                                          capsys, tmp_path):
    path = request.getfixturevalue(folder)
    prompt_file = tmp_path / "prompts.txt"
    prompt_file.write_text(prompts)
    code, out, err = _accelerate_cli(monkeypatch, capsys, "--model", str(path), "--prompt-file", str(prompt_file),
                                     "--threshold", "0.5", "--steps", "4", "--out", str(tmp_path / "plan.json"))
    assert code == 0, err
    summary = json.loads(out)
    plan = AttentionPlan.load(tmp_path / "plan.json")
    assert plan.num_steps == 4 and summary["threshold"] == 0.5
    assert summary["module_fraction"] < 1.0  # a loose threshold: some attention was really skipped
    assert summary["psnr_vs_no_plan"] > 0
    # the saved plan applies again to the same folder without a new calibration
    code, out, err = _accelerate_cli(monkeypatch, capsys, "--model", str(path), "--prompt-file", str(prompt_file),
                                     "--steps", "4", "--plan", str(tmp_path / "plan.json"),
                                     "--out", str(tmp_path / "unused.json"))
    assert code == 0, err
    assert json.loads(out)["module_fraction"] == pytest.approx(summary["module_fraction"])
    assert not (tmp_path / "unused.json").exists()


def test_a_bare_transformer_folder_cannot_calibrate_a_plan(pixart_pipeline_folder, monkeypatch, capsys, tmp_path):
    code, _, err = _accelerate_cli(monkeypatch, capsys, "--model", str(pixart_pipeline_folder / "transformer"),
                                   "--out", str(tmp_path / "plan.json"))
    assert code == 2 and "pass the pipeline folder" in err and "Traceback" not in err
