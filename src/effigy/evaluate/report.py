"""Writing results: one JSON file with everything, one Markdown table for people."""
from __future__ import annotations

import json
from pathlib import Path


class SettingsRecord:
    """Mixin for bench settings dataclasses: the settings as JSON-ready data (tuples become lists), the one
    serialiser the results files' ``settings`` field comes from."""

    def to_dict(self) -> dict:
        listed = lambda v: [listed(x) for x in v] if isinstance(v, tuple) else v
        return {k: listed(v) for k, v in self.__dict__.items()}


def format_value(value: object) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def markdown_table(rows: list[dict], columns: list[tuple[str, str]]) -> str:
    """``columns`` are (key, header) pairs; missing values print as n/a."""
    lines = ["| " + " | ".join(h for _, h in columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(format_value(row.get(k)) for k, _ in columns) + " |")
    return "\n".join(lines)


def machine_line(facts: dict) -> str:
    """The machine a result was measured on (from ``measure.machine_facts``), as results files state it:
    latencies, and on x86 which int8 kernels are exact, depend on it."""
    isa = f", ISA class: {facts['isa']}" if "isa" in facts else ""  # files measured before it was recorded lack it
    return (f"Machine: {facts['cpu']}, {facts['torch_threads']} torch threads, torch {facts['torch']}, "
            f"VNNI: {facts['vnni']}{isa}.")


def write_results(result: dict, markdown: str, directory: Path, stem: str) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    json_path, md_path = directory / f"{stem}.json", directory / f"{stem}.md"
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    md_path.write_text(markdown + "\n")
    return json_path, md_path
