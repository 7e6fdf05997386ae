"""The KV allocation file that ``effigy kvquant calibrate`` writes and ``PMKVQCache`` users read: the
per-layer widths for a memory budget at a target length, with the sensitivity table they came from."""
from __future__ import annotations

import json
from pathlib import Path

from effigy.errors import KVBudgetError
from effigy.kvcache.quantizer import KV_BITS
from effigy.mixedprec import SensitivityTable
from effigy.serialize import read_json_file, require

ALLOCATION_FORMAT = "effigy-kv-allocation/1"
CACHE_ARGUMENTS = ("allocation", "target_length", "group_size")  # what PMKVQCache takes from the file


def save_allocation(path: Path, widths: list[int], budget_mb: float, target_length: int, group_size: int,
                    table: SensitivityTable, command: str) -> Path:
    """Write the allocation ``widths`` (bits per layer) and how they were found."""
    path.write_text(json.dumps({"format": ALLOCATION_FORMAT, "budget_mb": budget_mb, "target_length": target_length,
                                "group_size": group_size, "allocation": widths, "table": table.to_dict(),
                                "command": command}, indent=1))
    return path


def read_allocation(path: Path) -> dict:
    """The :class:`~effigy.kvcache.progressive.PMKVQCache` arguments stored in an allocation file
    (``allocation``, ``target_length``, ``group_size``), or one clear error."""
    data = read_json_file(path, "an allocation from `effigy kvquant calibrate`", KVBudgetError)
    check = lambda ok, rule: require(ok, path, rule, KVBudgetError)
    check(isinstance(data, dict) and data.get("format") == ALLOCATION_FORMAT,
          f"format must be {ALLOCATION_FORMAT!r} (write the file with `effigy kvquant calibrate`)")
    widths = data.get("allocation")
    check(isinstance(widths, list) and widths and all(type(b) is int and b in KV_BITS for b in widths),
          f"allocation must list one width per layer, each one of {KV_BITS}")
    for key in ("target_length", "group_size"):
        check(type(data.get(key)) is int and data[key] > 0, f"{key} must be a positive integer")
    return {key: data[key] for key in CACHE_ARGUMENTS}
