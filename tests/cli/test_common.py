import sys

import pytest

from effigy.cli import _common
from effigy.errors import EffigyError
from effigy.models.zoo import WEIGHTS_DIR, read_manifest


def test_progress_off_a_terminal_prints_a_line_per_tenth_with_elapsed_time(capsys):
    with _common.progress() as start:  # pytest's captured stderr is not a terminal
        advance = start("sampling", 20)
        for _ in range(20):
            advance()
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0].endswith("sampling: 0/20") and lines[-1].endswith("sampling: 20/20")
    assert len(lines) == 11 and all(line.startswith("[") and "s] " in line for line in lines)


def test_progress_off_a_terminal_never_goes_silent_inside_a_long_step(capsys, monkeypatch):
    import time

    monkeypatch.setattr(_common, "HEARTBEAT_S", 0.2)
    with _common.progress() as start:
        advance = start("sampling fp32", 1)
        time.sleep(0.9)  # one long step: no progress line of its own
        advance()
    lines = capsys.readouterr().err.strip().splitlines()
    beats = [line for line in lines if "still working; last line: sampling fp32: 0/1" in line]
    assert 2 <= len(beats) <= 6 and lines[-1].endswith("sampling fp32: 1/1")


def test_printed_table_fits_100_columns_and_drops_empty_ones(capsys):
    columns = [("variant", "variant"), ("empty", "never set")] + [(f"c{i}", f"column number {i}") for i in range(12)]
    rows = [{"variant": "fp32", **{f"c{i}": 1.2345 * i for i in range(12)}}]
    _common.print_rows(rows, columns, "wide")
    out = capsys.readouterr().out
    assert max(len(line) for line in out.splitlines()) <= _common.TABLE_WIDTH
    assert "never set" not in out and "column number 0" in out and "more columns with --json" in out
    _common.print_rows(rows, columns, "wide", "more columns in the results file")
    assert "more columns in the results file" in capsys.readouterr().out


def test_one_comma_list_parser_names_the_option():
    assert _common.parse_bits("8,4,6") == (4, 6, 8)
    with pytest.raises(EffigyError, match="--mp-candidates '8,4,4': list each bit-width once"):
        _common.parse_bits("8,4,4")  # never de-duplicated silently
    assert _common.parse_counts("", "--tokens") == ()
    with pytest.raises(EffigyError, match="--tokens"):
        _common.parse_counts("", "--tokens", allow_empty=False)
    assert _common.parse_trust_regions("0.1,inf") == (0.1, None)
    floats = lambda text: _common.parse_floats(text, "--mp-bits")
    for bad, parse in (("4,x", _common.parse_bits), ("9", _common.parse_bits), ("nan", floats)):
        with pytest.raises(EffigyError, match="--m"):
            parse(bad)


def test_zoo_train_refuses_the_shipped_weights_folder(monkeypatch, capsys):
    from effigy import cli

    before = read_manifest()
    monkeypatch.setattr(sys, "argv", ["effigy", "zoo", "train", "digits-classifier", "--steps", "1",
                                      "--out", str(WEIGHTS_DIR)])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 2 and "shipped weights" in capsys.readouterr().err
    assert read_manifest() == before


def test_zoo_train_writes_outside_the_package_by_default(monkeypatch, capsys, tmp_path):
    from effigy import cli

    monkeypatch.chdir(tmp_path)
    before = read_manifest()
    monkeypatch.setattr(sys, "argv", ["effigy", "zoo", "train", "digits-classifier", "--steps", "1"])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert (exit_info.value.code or 0) == 0
    assert (tmp_path / "zoo_weights" / "digits-classifier.safetensors").exists() and read_manifest() == before


def test_results_default_to_a_fresh_run_folder_never_the_committed_results(tmp_path, monkeypatch):
    from pathlib import Path

    from effigy.cli._common import fresh_run_folder
    from effigy.cli.bench import results_stem

    monkeypatch.chdir(tmp_path)
    first = results_stem(None, "quant", "dit-digits")
    assert first.parts[0] == "runs" and first.parts[-3:] == ("quant", "dit-digits", "quant_dit_digits")
    assert first.parent.is_dir()  # made (and checked writable) when the stem is taken, before any work
    assert fresh_run_folder() != first.parents[2]  # an existing run folder is never reused
    committed = results_stem(Path("benchmarks/results"), "fastattn", "t2i-shapes")
    assert committed == Path("benchmarks/results/fastattn/t2i-shapes/fastattn_t2i_shapes")


def test_the_compiled_options_defaults_are_the_benches_own():
    from effigy.bench.mixdq import MixDQBenchSettings
    from effigy.bench.quant import QuantBenchSettings

    assert _common.parse_compiled(_common.COMPILED_DEFAULT, QuantBenchSettings.recipes) == QuantBenchSettings.compiled
    assert _common.parse_batches(_common.CROSSOVER_DEFAULT) == QuantBenchSettings.crossover_batches
    assert _common.parse_batches(_common.CROSSOVER_DEFAULT) == MixDQBenchSettings.crossover_batches
    assert _common.parse_compiled("none", QuantBenchSettings.recipes) == ()
