"""The single-layer and KV sections of `effigy bench scale` on their own (without the DiT-XL/2 model
section, whose variants at full size need more memory and time than one 2-core, 24 GB session gave).

    python benchmarks/scripts/scale_sections.py    (writes benchmarks/results/scale/dit-xl-2/sections.{json,md})
"""
from __future__ import annotations

import json
from pathlib import Path

from effigy.bench.scale_kv import KVScaleSettings, run_kv_section
from effigy.bench.scale_layers import run_layer_section
from effigy.bench.scale_report import KV_COLUMNS, KV_MEMORY_COLUMNS, LAYER_COLUMNS
from effigy.evaluate.measure import machine_facts
from effigy.evaluate.report import machine_line, markdown_table

OUT = Path("benchmarks/results/scale/dit-xl-2")


def main() -> None:
    layers = run_layer_section((256, 4096), repeats=3, seed=0)
    kv = run_kv_section(KVScaleSettings(lengths=(2048, 8192), seed=0))
    result = {"command": "python benchmarks/scripts/scale_sections.py", "machine": machine_facts(),
              "layers": layers, "kv": kv}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "sections.json").write_text(json.dumps(result, indent=2) + "\n")
    text = "\n\n".join([
        "# effigy bench scale: single layers and KV caches", f"Command: `{result['command']}`  \n"
        + machine_line(result["machine"]) + "  \nRandom seeded weights and inputs for the layers (speed, bytes "
        "and output error vs fp32 only); the real SmolLM2-135M for the KV caches, prefilled with the same random "
        "token ids in chunks of 1,024, then 16 decoding steps with the caches taking turns.",
        "## Single layers of DiT-XL/2's shapes (median of 3 interleaved rounds)", markdown_table(layers, LAYER_COLUMNS),
        "## KV caches at 2k and 8k tokens", markdown_table(kv["rows"], KV_COLUMNS),
        f"## Memory only at {kv['settings']['memory_length']} tokens (SmolLM2's geometry, random K/V, a fresh "
        "process per cache)", markdown_table(kv["memory_only"], KV_MEMORY_COLUMNS)])
    (OUT / "sections.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
