"""The ``effigy`` command line: a thin layer over the library (all work happens in effigy.*).

A command parses its options, builds a settings object, calls one library function, writes one
report and prints. Any :class:`EffigyError` becomes one line on stderr and exit code 2.
"""
from __future__ import annotations

import logging

import typer

from effigy.bench import quiet_third_party_imports
from effigy.cli import bench, kvquant, methods, zoo
from effigy.cli._common import console
from effigy.errors import EffigyError

app = typer.Typer(help="effigy: compress generative models, evaluate them cheaply, detect what they produce.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
methods.register(app)
app.add_typer(bench.app, name="bench")
app.add_typer(methods.evaluate_app, name="evaluate")
app.add_typer(kvquant.app, name="kvquant")
app.add_typer(zoo.app, name="zoo")


@app.callback()
def _options(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log the decisions effigy makes "
                                          "(layers quantized or kept, backends picked).")) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


def main() -> None:
    quiet_third_party_imports()
    try:
        app()
    except EffigyError as error:
        console.print(f"[red]error:[/red] {error}", soft_wrap=True, markup=True)
        raise SystemExit(2) from None
