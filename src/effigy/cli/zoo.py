"""``effigy zoo ...``: the shipped models and the seeded commands that trained them."""
from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Optional

import typer

from effigy.cli._common import JSON, console, echo_json, print_rows, progress, writable_folder
from effigy.errors import CheckpointError

app = typer.Typer(help="Shipped models and the commands that trained them.", no_args_is_help=True)


@app.command("list")
def zoo_list(as_json: bool = JSON) -> None:
    """Shipped models, their weight files and sha256."""
    from effigy.models.zoo import ZOO, read_manifest

    manifest = read_manifest()
    rows = [{"name": n, "description": e.description, "sha256": manifest.get(n, {}).get("sha256", "not trained")[:16]}
            for n, e in ZOO.items()]
    if as_json:
        echo_json(rows)
    else:
        print_rows(rows, [("name", "name"), ("sha256", "sha256 (prefix)"), ("description", "description")], "effigy zoo")


@app.command("train")
def zoo_train(
    name: str = typer.Argument(..., help="Zoo model to train, e.g. dit-digits."),
    out: Path = typer.Option(Path("zoo_weights"), help="Folder for the weights and their manifest (never the "
                             "package's shipped weights)."),
    steps: Optional[int] = typer.Option(None, min=1, max=10_000_000, help="Override the number of training steps (for quick checks)."),
) -> None:
    """Re-run the seeded training command that produced a shipped model, into ``--out``.

    The shipped weights are replaced only by the maintainer step in docs/models.md (copy the file and its
    manifest record after checking it), never by this command."""
    from effigy.models.zoo import WEIGHTS_DIR, read_manifest, train_zoo_model, zoo_entry

    if out.resolve() == WEIGHTS_DIR.resolve():
        raise CheckpointError(f"--out {out} is the package's shipped weights folder; train into another folder "
                              "and follow docs/models.md to update a shipped model.")
    if steps is not None and "train_steps" not in {f.name for f in fields(zoo_entry(name).config_cls)}:
        raise CheckpointError(f"--steps does not apply to {name}: it trains in several phases with their own lengths.")
    total = steps or zoo_entry(name).config_cls().train_steps  # an unknown name fails here, before --out is made
    writable_folder(out)
    read_manifest(out / "MANIFEST.json")  # a damaged manifest there is refused before hours of training
    overrides = {} if steps is None else {"train_steps": steps}
    with progress() as reporter:
        advance = reporter(f"training {name}", total)
        path = train_zoo_model(name, out, progress=lambda _s, _l: advance(), **overrides)
    console.print(f"wrote {path} (load it with effigy.models.zoo.load_zoo_model({name!r}, {str(out)!r}))")
