"""The KV allocation file that ``effigy kvquant calibrate`` writes and ``PMKVQCache`` users read: the
per-layer widths for a memory budget at a target length, with the sensitivity table they came from."""
from __future__ import annotations

import json
from pathlib import Path

from effigy.errors import KVBudgetError
from effigy.mixedprec import SensitivityTable

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
    try:
        data = json.loads(Path(path).read_text())
        return {key: data[key] for key in CACHE_ARGUMENTS}
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as error:
        raise KVBudgetError(f"{path} is not an allocation from `effigy kvquant calibrate` ({error!r}).") from None
