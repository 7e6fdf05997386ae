"""The ``effigy`` command line: a thin layer over the library (all work happens in effigy.*).

A command parses its options, builds a settings object, calls one library function, writes one
report and prints. Any :class:`EffigyError` becomes one line on stderr and exit code 2.
"""
from __future__ import annotations

import logging

import typer

from effigy.cli import bench, detect, detect3d, flasheval, kvquant, methods, serve, zoo
from effigy.cli._common import console
from effigy.errors import EffigyError
from effigy.quiet import quiet_third_party_imports

# the click that typer runs on (its own copy): usage errors become effigy's one-line errors below
ClickException = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")
app = typer.Typer(help="effigy: compress generative models, evaluate them cheaply, detect what they produce.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
methods.register(app)
app.add_typer(bench.app, name="bench")
app.add_typer(methods.evaluate_app, name="evaluate")
app.add_typer(kvquant.app, name="kvquant")
app.add_typer(flasheval.app, name="flasheval")
app.add_typer(zoo.app, name="zoo")
app.add_typer(detect3d.app, name="detect3d")
app.add_typer(detect.app, name="detect")
app.command("serve")(serve.serve)


@app.callback()
def _options(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log the decisions effigy makes "
                                          "(layers quantized or kept, backends picked).")) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


def main() -> None:
    """Run the app; a bad option or input is one line on stderr and exit code 2, Ctrl-C exit code 130."""
    quiet_third_party_imports()
    try:
        code = app(standalone_mode=False)
    except EffigyError as error:
        _fail(str(error))
    except ClickException as error:
        if type(error).__name__ == "NoArgsIsHelpError":  # the help was shown: not an error
            raise SystemExit(0) from None
        ctx = getattr(error, "ctx", None)
        where = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        _fail(f"{error.format_message()}{where}")
    except (typer.Abort, KeyboardInterrupt):
        raise SystemExit(130) from None
    except typer.Exit as done:
        raise SystemExit(done.exit_code) from None
    raise SystemExit(code if isinstance(code, int) else 0)


LONGEST_WORD = 160  # a pasted blob in an option is shortened in the error line, which stays one readable line


def _fail(message: str) -> None:
    from rich.text import Text

    words = (word if len(word) <= LONGEST_WORD else f"{word[:LONGEST_WORD - 20]}...({len(word):,} characters)"
             for word in message.split())
    console.print(Text.assemble(("error:", "red"), " ", " ".join(words)), soft_wrap=True)
    raise SystemExit(2) from None
