"""The one shape of a bench: ``Bench(name, settings, run, write, table)``, declared in one table and loaded when
first asked for (no registration by import).

A bench command parses its options into the bench's settings and calls :func:`run_bench`, which places the files
(``<out>/<bench>/<model>/``; a fresh run folder without ``--out``, so a quick check never overwrites committed
results), runs with progress, writes JSON + Markdown and prints the table (or the JSON).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from effigy.errors import UnknownNameError
from effigy.evaluate.measure import Progress

# bench name -> the module that defines its BENCH
DECLARED = {
    "quant": "effigy.bench.quant_report", "mixdq": "effigy.bench.mixdq_report", "lcm": "effigy.bench.lcm",
    "kernels": "effigy.bench.kernels", "scale": "effigy.bench.scale_report", "t2i-scorers": "effigy.bench.t2i_scorers",
    "fastattn": "effigy.bench.fastattn_report", "litevar": "effigy.bench.litevar_report",
    "kvquant": "effigy.bench.kvquant_report", "flasheval": "effigy.bench.flasheval_report",
    "ada3d": "effigy.bench.ada3d_report", "fas": "effigy.bench.fas_report", "deepfake": "effigy.bench.deepfake_report",
    "robustness": "effigy.bench.robustness",
}


@dataclass(frozen=True)
class Bench:
    """One comparison.

    Attributes:
        name: the command (``effigy bench <name>``) and the results folder (``benchmarks/results/<name>/``).
        settings: its settings class (a :class:`~effigy.evaluate.report.SettingsRecord`).
        run: ``run(settings, progress) -> result``.
        write: ``write(result, stem, command) -> {kind: path}``: the JSON + Markdown (and pictures) at ``stem``.
        table: ``table(result, settings) -> (shown, columns, title)``: what ``--json`` prints (its ``rows`` the
            table).
        model: ``model(settings)``: the ``<model>`` folder of the results.
        file_name: the files' stem (default ``<name>_<model>``).
        note: ``note(result)``: a line under the table, or None.
    """

    name: str
    settings: type
    run: Callable[[Any, Progress], dict]
    write: Callable[[dict, Path, str], dict[str, Path]]
    table: Callable[[dict, Any], tuple[dict, list[tuple[str, str]], str]]
    model: Callable[[Any], str] = lambda settings: settings.model
    file_name: str | None = None
    note: Callable[[dict], str | None] = lambda result: None


def get_bench(name: str) -> Bench:
    """The declared bench ``name``, its module imported now."""
    if name not in DECLARED:
        raise UnknownNameError(f"unknown bench {name!r}; choose one of {', '.join(DECLARED)}")
    bench = importlib.import_module(DECLARED[name]).BENCH
    assert bench.name == name, f"{DECLARED[name]}.BENCH is {bench.name!r}, declared as {name!r}"
    return bench


def rows_table(columns: list[tuple[str, str]], title: Callable[[dict, Any], str]
               ) -> Callable[[dict, Any], tuple[dict, list[tuple[str, str]], str]]:
    """The usual table: the result's rows under ``title(result, settings)`` (``--json`` prints those rows)."""
    return lambda result, settings: ({"rows": result["rows"]}, columns, title(result, settings))


def in_folder(write: Callable[[dict, Path, str], dict[str, Path]]) -> Callable[[dict, Path, str], dict[str, Path]]:
    """A writer that names its own files in a folder, as a :attr:`Bench.write` (given the stem, it uses its folder)."""
    return lambda result, stem, command: write(result, stem.parent, command)


def at_stem(write: Callable[[dict, Path, str, str], dict[str, Path]]) -> Callable[[dict, Path, str], dict[str, Path]]:
    """A writer taking (result, folder, stem name, command), as a :attr:`Bench.write`."""
    return lambda result, stem, command: write(result, stem.parent, stem.name, command)


def json_and_markdown(render: Callable[[dict], str]) -> Callable[[dict, Path, str], dict[str, Path]]:
    """``stem``.json and ``stem``.md (``render(result)``), the command recorded in the result first."""
    from effigy.evaluate.report import write_results

    def write(result: dict, stem: Path, command: str) -> dict[str, Path]:
        result["command"] = command
        json_path, md_path = write_results(result, render(result), stem.parent, stem.name)
        return {"json": json_path, "markdown": md_path}

    return write
