"""One bench contract: every `effigy bench` command is a declared Bench, loaded on demand, with a settings class
and the files it writes placed by one helper."""
import dataclasses
import subprocess
import sys

import pytest
import typer.main

from effigy import cli
from effigy.bench.contract import DECLARED, Bench, get_bench
from effigy.errors import UnknownNameError


def test_every_bench_command_is_a_declared_bench():
    commands = set(typer.main.get_command(cli.app).commands["bench"].commands)
    assert commands == set(DECLARED)


@pytest.mark.parametrize("name", sorted(DECLARED))
def test_each_declared_bench_loads_with_its_name_and_a_settings_class(name):
    bench = get_bench(name)
    assert isinstance(bench, Bench) and bench.name == name
    assert dataclasses.is_dataclass(bench.settings)
    assert callable(bench.run) and callable(bench.write) and callable(bench.table)


def test_an_unknown_bench_is_one_clear_error():
    with pytest.raises(UnknownNameError, match="unknown bench 'nosuch'; choose one of quant"):
        get_bench("nosuch")


def test_the_cli_imports_no_bench_module_until_a_bench_runs():
    code = ("import sys; import effigy.cli; "
            "print(sorted(m for m in sys.modules if m.startswith('effigy.bench.')))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"
