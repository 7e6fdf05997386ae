"""The import rule of ../shared/ARCHITECTURE.md, enforced: every ``import effigy.X`` in src/effigy is parsed
with ``ast`` (lazy imports inside functions included) and checked against the packages X may import.

Layers, bottom up: base modules (errors, registry, serialize, memory, images, quiet, cluster) <- core <- mixedprec, nn
<- checkpoint <- attention, kvcache; models, worlds, metrics (which may import each other and checkpoint) <- lidar,
detect <- recipes <- evaluate <- workflows <- bench <- serve <- cli; in cli/ only the bench commands
(``cli/bench.py``) import bench/: a user verb runs workflows, never a measurement floor. The package façade
(``effigy/__init__``) re-exports from below recipes.
"""
import ast
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "effigy"

BASE = {"errors", "registry", "serialize", "memory", "images", "quiet", "cluster"}
DOMAIN = {"models", "worlds", "metrics"}
_below = {
    "core": set(),
    "mixedprec": {"core"},
    "nn": {"core"},
    "checkpoint": {"core", "nn"},
    "attention": {"core", "nn"},
    "kvcache": {"core", "nn", "mixedprec"},
    **{name: {"core", "nn", "checkpoint"} | DOMAIN for name in DOMAIN},
}
_below["lidar"] = _below["detect"] = set().union(*_below.values()) | {"attention", "kvcache", "mixedprec"}
_below["recipes"] = _below["lidar"] | {"lidar", "detect"}
_below["evaluate"] = _below["recipes"] | {"recipes"}
_below["workflows"] = _below["evaluate"] | {"evaluate"}
_below["bench"] = _below["workflows"] | {"workflows"}
_below["serve"] = _below["bench"] | {"bench"}
_below["cli"] = _below["serve"] | {"serve"}  # `effigy serve` starts the service
_below["__init__"] = _below["recipes"]
ALLOWED = {name: allowed | BASE for name, allowed in _below.items()}
ALLOWED.update({"errors": set(), "registry": {"errors"}, "serialize": {"errors"}, "memory": {"errors"}, "images": {"errors"},
                "quiet": set(), "cluster": {"errors"}})
# core is numeric: no model libraries
FORBIDDEN_THIRD_PARTY = {"core": ("diffusers", "transformers", "torch.nn.modules")}


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every absolute import in ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


def package_of(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return parts[0]


BENCH_COMMANDS = Path("cli", "bench.py")  # the one cli module that may import bench/


def violations() -> list[str]:
    found = []
    for path in sorted(SRC.rglob("*.py")):
        source = package_of(path)
        for line, module in imports_of(path):
            where = f"{path.relative_to(SRC)}:{line} imports {module}"
            if source == "cli" and path.relative_to(SRC) != BENCH_COMMANDS and module.startswith("effigy.bench"):
                found.append(f"{where} (only the bench commands, cli/bench.py, import bench/; a user verb calls "
                             "workflows/)")
            if module.startswith(FORBIDDEN_THIRD_PARTY.get(source, ("\0",))):
                found.append(f"{where} (core imports no model library)")
            if not module.startswith("effigy."):
                continue
            target = module.split(".")[1]
            if target != source and target not in ALLOWED.get(source, set()):
                found.append(f"{where} ({source} may import {sorted(ALLOWED.get(source, set()))})")
    return found


def test_every_package_is_placed_in_a_layer():
    packages = {package_of(p) for p in SRC.rglob("*.py")}
    assert packages <= set(ALLOWED), f"add {sorted(packages - set(ALLOWED))} to the layers of this test"


def test_no_import_goes_against_the_layers():
    assert violations() == []


def test_the_check_catches_an_upward_import(tmp_path, monkeypatch):
    fake = tmp_path / "effigy"
    (fake / "core").mkdir(parents=True)
    (fake / "core" / "bad.py").write_text("def f():\n    from effigy.evaluate import measure\n")
    monkeypatch.setattr(sys.modules[__name__], "SRC", fake)
    assert len(violations()) == 1 and "core/bad.py:2" in violations()[0]


def test_the_check_catches_a_user_verb_that_runs_a_bench(tmp_path, monkeypatch):
    fake = tmp_path / "effigy"
    (fake / "cli").mkdir(parents=True)
    (fake / "cli" / "methods.py").write_text("def f():\n    from effigy.bench.quant import run_quant_bench\n")
    (fake / "cli" / "bench.py").write_text("from effigy.bench.quant import run_quant_bench\n")
    monkeypatch.setattr(sys.modules[__name__], "SRC", fake)
    assert len(violations()) == 1 and "cli/methods.py:2" in violations()[0]
