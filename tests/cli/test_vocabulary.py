"""One CLI vocabulary, over every command's options: one spelling per concept, ``--prompts`` always a count,
``--json`` wherever results are printed, and every old spelling a hidden alias that still works and says so in
one line."""
import sys
import types
import typing
from pathlib import Path

import pytest
import typer.main

from effigy import cli

# concept -> (its one spelling, spellings of the same concept that must not appear as visible options)
CONCEPTS = {
    "the model under test": ("--model", {"--weights", "--generator", "--checkpoint", "--dit", "--student", "--teacher",
                                         "--model-name", "--model-path"}),
    "an average bit target": ("--average-bits", {"--bits", "--mp-bits", "--avg-bits", "--target-bits"}),
    "a prompt text file": ("--prompt-file", {"--prompts-file", "--prompt-path", "--captions-file"}),
    "a FlashEval subset file": ("--subset", {"--subset-file", "--prompt-subset"}),
    "a score matrix": ("--scores", {"--matrix", "--score-matrix", "--score-file"}),
    "the output location": ("--out", {"--save", "--save-dir", "--output", "--out-dir", "--results", "--dest"}),
}
# commands that print no results (they write files, or serve), so they need no --json
WITHOUT_JSON = {
    "serve": "a service: it logs requests and prints no results",
    "zoo train": "writes weights and says where",
    "detect fas train": "writes weights and says where (zoo train under the face name)",
    "detect3d simulate": "writes KITTI frames and says where",
}
# hidden options are the old spellings of one release, each with the spelling that replaced it
ALIASES = {"--prompts": "--prompt-file / --subset", "--mp-bits": "--average-bits", "--bits": "--average-bits",
           "--weights": "--model", "--generator": "--model", "--checkpoint": "--model", "--dit": "--compare-dit",
           "--no-dit": "--no-compare-dit", "--save": "--out", "--save-dir": "--out", "--matrix": "--scores",
           "--search-seeds": "--splits"}


def _commands():
    def walk(command, path):
        if hasattr(command, "commands"):
            for name, sub in command.commands.items():
                yield from walk(sub, f"{path} {name}".strip())
        else:
            yield path, command
    return list(walk(typer.main.get_command(cli.app), ""))


def _options(command, hidden: bool):
    for param in command.params:
        if bool(getattr(param, "hidden", False)) == hidden:
            for name in [*param.opts, *getattr(param, "secondary_opts", [])]:
                if name.startswith("--") and name != "--help":
                    yield name, param


def test_the_walk_sees_every_command():
    names = {path for path, _ in _commands()}
    assert {"quantize", "accelerate", "bench quant", "bench mixdq", "flasheval apply", "detect fas adapt",
            "kvquant generate", "serve"} <= names and len(names) >= 34


def test_one_spelling_per_concept():
    found = []
    for path, command in _commands():
        for name, _ in _options(command, hidden=False):
            for concept, (spelling, others) in CONCEPTS.items():
                if name in others:
                    found.append(f"{path}: {name} is {concept}; spell it {spelling}")
    assert not found, "\n".join(found)


def _value_type(param) -> type:
    """The option's Python type, ``Optional[X]`` read as X."""
    annotation = param.type_descriptor.annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    return annotation


def test_prompts_is_always_a_count_and_files_are_paths():
    for path, command in _commands():
        for name, param in _options(command, hidden=False):
            kind = _value_type(param)
            if name == "--prompts":
                assert kind is int, f"{path}: --prompts is a count, not {kind}"
            if name in ("--prompt-file", "--subset"):
                assert kind is Path, f"{path}: {name} is a file, not {kind}"


def test_json_wherever_results_are_printed():
    missing = [path for path, command in _commands()
               if path not in WITHOUT_JSON and "--json" not in dict(_options(command, hidden=False))]
    assert not missing, f"add --json to {missing} (or say in WITHOUT_JSON why they print no results)"
    assert set(WITHOUT_JSON) <= {path for path, _ in _commands()}


def test_every_hidden_option_is_a_known_old_spelling():
    unknown = [f"{path}: {name}" for path, command in _commands() for name, _ in _options(command, hidden=True)
               if name not in ALIASES]
    assert not unknown, f"hidden options must be deprecated aliases listed in ALIASES: {unknown}"


@pytest.mark.parametrize("args, old, new", [
    (["bench", "quant", "--mp-bits", "9"], "--mp-bits", "--average-bits"),
    (["bench", "mixdq", "--bits", "1.0"], "--bits", "--average-bits"),
    (["select-widths", "--checkpoint", "no/such/dir", "--allocation", "none.json", "--out", "o"], "--checkpoint",
     "--model"),
    (["bench", "lcm", "--weights", "no/such/dir"], "--weights", "--model"),
    (["bench", "flasheval", "--matrix", "no/such.json"], "--matrix", "--scores"),
])
def test_an_old_spelling_still_reaches_the_option_and_says_the_new_one_once(args, old, new, monkeypatch, capsys,
                                                                             tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["effigy", *args])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    err = capsys.readouterr().err
    notes = [line for line in err.splitlines() if "deprecated" in line]
    assert len(notes) == 1 and old in notes[0] and new in notes[0]
    assert exit_info.value.code == 2 and "error:" in err  # the value reached the option: it was checked and refused
