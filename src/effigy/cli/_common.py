"""What every command shares: progress (bars on a terminal, one line per stage in a log), the results
table, writing results files, and one parser for comma-separated options."""
from __future__ import annotations

import json
import math
import shlex
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from effigy.errors import EffigyError

console = Console(stderr=True, markup=False, highlight=False)  # user text (paths, names) is printed as it is
TABLE_WIDTH = 100  # the printed table fits this; every column is in the results file
LOG_EVERY = 0.1  # a progress line per tenth of a stage when not on a terminal
HEARTBEAT_S = 30.0  # without a terminal, a line at least this often, also inside a long step


@contextmanager
def progress(enabled: bool = True) -> Iterator[Callable[[str, int], Callable[[], None]]]:
    """A Progress reporter (see effigy.evaluate.measure): rich bars on a terminal; without one (CI logs,
    ``| tee``) a line per stage start, per tenth of it and at its end, with the elapsed time."""
    if not enabled:
        yield lambda _description, _total: (lambda: None)
    elif console.is_terminal:
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console, transient=False) as bars:
            yield lambda description, total: _bar(bars, description, total)
    else:
        with _heartbeat(HEARTBEAT_S) as state:
            yield _line_progress(state)


@contextmanager
def _heartbeat(every_s: float) -> Iterator[dict]:
    """A thread that prints ``still working; last line: ...`` when nothing was printed for ``every_s`` seconds, so a
    log never goes silent during one long step (a sampling run, a compile). Yields the shared state the
    progress lines update: the last line and when it was printed."""
    now = time.perf_counter()
    state = {"text": "starting", "at": now, "started": now}
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(min(every_s, 1.0)):
            if time.perf_counter() - state["at"] >= every_s:
                _log_line(state, f"still working; last line: {state['text']}", keep_text=True)

    thread = threading.Thread(target=beat, name="effigy-progress-heartbeat", daemon=True)
    thread.start()
    try:
        yield state
    finally:
        stop.set()
        thread.join()


def _bar(bars: Progress, description: str, total: int) -> Callable[[], None]:
    task = bars.add_task(description, total=total)
    return lambda: bars.advance(task)


def _line_progress(state: dict) -> Callable[[str, int], Callable[[], None]]:
    """A line per stage start, per tenth of it and at its end, timed from ``state["started"]``."""
    def start(description: str, total: int) -> Callable[[], None]:
        done, step = [0], max(1, math.ceil(total * LOG_EVERY))
        _log_line(state, f"{description}: 0/{total}")

        def advance() -> None:
            done[0] += 1
            if done[0] % step == 0 or done[0] == total:
                _log_line(state, f"{description}: {done[0]}/{total}")
        return advance
    return start


def _log_line(state: dict, text: str, keep_text: bool = False) -> None:
    """One timestamped line on stderr; remembered (unless ``keep_text``) for the heartbeat's line."""
    now = time.perf_counter()
    print(f"[{now - state['started']:7.1f}s] {text}", file=sys.stderr, flush=True)
    state["at"] = now
    if not keep_text:
        state["text"] = text


def command_line() -> str:
    return "effigy " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def print_rows(rows: list[dict], columns: list[tuple[str, str]], title: str,
               rest: str = "more columns with --json") -> None:
    """A table of ``rows`` on stdout that fits ``TABLE_WIDTH``: columns without values are dropped, then
    columns from the right until the rest fit; ``rest`` says where the dropped ones are (--json, or the
    results file a command wrote)."""
    from effigy.evaluate.report import format_value

    cells = {key: [format_value(row.get(key)) for row in rows] for key, _ in columns}
    filled = [(key, header) for key, header in columns if any(c != "n/a" for c in cells[key])]
    shown, width = [], 4
    for key, header in filled:
        width += max(len(header), *(len(c) for c in cells[key])) + 3
        if width > TABLE_WIDTH and shown:
            break
        shown.append((key, header))
    table = Table(title=title, caption=None if len(shown) == len(filled) else rest)
    for key, header in shown:
        table.add_column(header, justify="left" if key in ("variant", "method", "name") else "right")
    for i in range(len(rows)):
        table.add_row(*(cells[key][i] for key, _ in shown))
    Console(width=TABLE_WIDTH if not console.is_terminal else None, markup=False, highlight=False).print(table)


def echo_json(data: object) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


def show(result: dict, columns, title: str, files: dict[str, Path], as_json: bool) -> None:
    """Print the JSON (rows and files) or the key columns of the rows and the files written."""
    if as_json:
        echo_json({**result, "files": {k: str(v) for k, v in files.items()}})
        return
    print_rows(result["rows"], columns, title, "more columns in the results file")
    console.print("wrote " + ", ".join(str(p) for p in files.values()))


def parse_list(text: str, option: str, convert: Callable = float, valid: Callable = lambda v: True,
               example: str = "1,2", rule: str = "give one or more values") -> list:
    """The comma-separated values of one option, each converted and checked, or one clear error."""
    try:
        values = [convert(v) for v in text.split(",") if v.strip()]
    except ValueError:
        kind = "integers" if convert is int else "numbers"
        raise EffigyError(f"{option} {text!r}: give comma-separated {kind}, e.g. {example}.") from None
    if not values or not all(valid(v) for v in values):
        raise EffigyError(f"{option} {text!r}: {rule}.")
    return values


def parse_bits(text: str, option: str = "--mp-candidates") -> tuple[int, ...]:
    bits = parse_list(text, option, int, lambda b: 2 <= b <= 8, "3,4,6,8", "every bit-width must lie in 2..8")
    if len(set(bits)) != len(bits):
        raise EffigyError(f"{option} {text!r}: list each bit-width once, e.g. 4,6,8.")
    return tuple(sorted(bits))


def parse_floats(text: str, option: str, allow_inf: bool = False) -> tuple[float, ...]:
    """Non-negative numbers (NaN fails ``v >= 0``); ``inf`` only where it means "no limit"."""
    return tuple(parse_list(text, option, float, lambda v: v >= 0 and (allow_inf or math.isfinite(v)),
                            "0.05,0.1,0.2", "give one or more non-negative finite numbers"))


def parse_shares(text: str, option: str) -> tuple[float, ...]:
    """Fractions in (0, 1], such as kept shares or coverages."""
    return tuple(parse_list(text, option, float, lambda v: 0 < v <= 1, "0.95,0.8", "every share must lie in (0, 1]"))


def parse_counts(text: str, option: str, allow_empty: bool = True) -> tuple[int, ...]:
    """Token counts or lengths; with ``allow_empty`` an empty text means none (the section is skipped)."""
    if allow_empty and not text.strip():
        return ()
    return tuple(parse_list(text, option, int, lambda n: 1 <= n <= 65536, "256,1024", "every count must lie in 1..65536"))


# options every command spells alike (one definition, not one copy a command)
SEED = typer.Option(0, min=0, max=2**31 - 1, help="Random seed (every run with it gives the same numbers).")
JSON = typer.Option(False, "--json", help="Print machine-readable JSON instead of a table.")
RESULTS_OUT = typer.Option(None, help="Results root: files go to <root>/<bench>/<model>/. Default: a fresh folder "
                           "under runs/; the committed results are written with --out benchmarks/results.")
COMPILED_DEFAULT = "vidit-q-w8a8,vidit-q-w4a8"  # the benches' own defaults (bench.quant, bench.compiled; tested)
CROSSOVER_DEFAULT = "2,8,32,128"
COMPILED_HELP = ("Recipes that also get a compiled row (with FP), through effigy.compile, timed beside the eager FP; "
                 "'none' for no compiled rows.")
CROSSOVER_HELP = ("Images per call at which compiled W8A8 is timed against compiled FP (one graph each; "
                  "'none' to skip).")


def parse_compiled(text: str, recipes: tuple[str, ...], option: str = "--compiled") -> tuple[str, ...]:
    """Names among the run's ``recipes`` (``none``: no compiled rows)."""
    if text.strip() == "none":
        return ()
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in recipes]
    if unknown or not names:
        raise EffigyError(f"{option} {text!r}: name recipes this run has ({', '.join(recipes)}), or 'none'.")
    return names


def parse_batches(text: str, option: str = "--crossover-batches") -> tuple[int, ...]:
    """Images per call for a crossover section (``none``: skip it)."""
    if text.strip() == "none":
        return ()
    return tuple(parse_list(text, option, int, lambda n: 1 <= n <= 4096, "2,8,32", "every batch must lie in 1..4096"))


def parse_trust_regions(text: str) -> tuple[float | None, ...]:
    regions = parse_floats(text, "--mp-max-moved", allow_inf=True)
    return tuple(None if math.isinf(r) else r for r in regions)


def check_choice(value: str, choices, option: str) -> str:
    if value not in choices:
        raise EffigyError(f"{option} {value!r}: choose one of {', '.join(choices)}.")
    return value


RUNS = Path("runs")


def fresh_run_folder() -> Path:
    """``runs/<date>-<time>[-n]``, not yet existing: the default output of benches and evaluations."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    folder, n = RUNS / stamp, 1
    while folder.exists():
        folder, n = RUNS / f"{stamp}-{n}", n + 1
    return folder


def inside_package(path: Path) -> bool:
    """Whether ``path`` lies in effigy's own installed files (shipped weights, manifest, code)."""
    import effigy

    package = Path(effigy.__file__).resolve().parent
    return path.resolve() == package or package in path.resolve().parents


def finite(value: float | None) -> float | None:
    """Option callback: nan and inf are not numbers a user means (a nan budget would silently mean none)."""
    if value is not None and not math.isfinite(value):
        raise typer.BadParameter("give a finite number (not nan or inf)")
    return value


def positive(value: float | None) -> float | None:
    """Option callback: a finite number above zero (a budget, a size)."""
    if finite(value) is not None and value <= 0:
        raise typer.BadParameter("give a number above 0")
    return value


def writable_folder(path: Path, option: str = "--out") -> Path:
    """``path`` as an output folder, checked before any work: outside the installed package, creatable, a
    folder, and writable."""
    if inside_package(path):
        raise EffigyError(f"{option} {path} is inside the installed effigy package; write somewhere else.")
    if path.exists() and not path.is_dir():
        raise EffigyError(f"{option} {path} is a file, not a folder; pass a folder to write into.")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".effigy-write-check"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise EffigyError(f"{option} {path} cannot be written ({error.strerror or error}); pass a writable folder.") \
            from None
    return path


def writable_file(path: Path, option: str = "--out") -> Path:
    """``path`` as an output file, checked before any work: not a folder, in a writable folder."""
    if path.is_dir():
        raise EffigyError(f"{option} {path} is a folder; pass a file name to write.")
    writable_folder(path.parent, option)
    return path


def deprecated(old_value, old: str, new: str, value=None):
    """An old spelling of an option, kept one release: ``value`` (the new option's) where the old spelling was not
    given; otherwise one line on stderr naming the new spelling, and the old spelling's value, since a new option
    with a default cannot tell "not given" from its default."""
    if old_value is None:
        return value
    typer.echo(f"note: {old} is deprecated and will be removed in the next release; use {new}.", err=True)
    return old_value


def parse_domains(text: str | None, option: str = "--domains") -> list[str]:
    """The capture domains a comma list names (all of them when the option is not given); a list that names
    none (``''``, ``,,``) is an error, not "all"."""
    from effigy.worlds.faces import DOMAINS

    if text is None:
        return list(DOMAINS)
    names = [d.strip() for d in text.split(",") if d.strip()]
    if not names:
        raise EffigyError(f"{option} {text!r} names no capture domain; give one or more of {', '.join(DOMAINS)} "
                          "(or leave the option out for all).")
    for name in names:
        check_choice(name, tuple(DOMAINS), option)
    return list(dict.fromkeys(names))
