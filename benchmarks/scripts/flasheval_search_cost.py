"""What `effigy flasheval search` costs on FlashEval's released COCO ImageReward tree (issue 43's bar: under
2 GB peak and a few minutes on 2 cores), at the default 2,000 subsets per round and at 10,000 (where the search
once held 6.6 GB), each in a fresh process: wall seconds and peak resident memory (the reader's parse of 76
JSON files included).

    python benchmarks/scripts/flasheval_search_cost.py FlashEval    # the release's root; ~2 min, run alone

Writes benchmarks/results/checks/flasheval_search_cost.{json,md}.
"""
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from effigy.evaluate.measure import machine_facts
from effigy.evaluate.report import machine_line, markdown_table

OUT = Path("benchmarks/results/checks")
SUBSETS = (2000, 10000)


def run(tree: Path, subsets: int) -> dict:
    """One search in a child process; its peak RSS from the children's rusage (this script's children are these
    searches only, run one after another, so the maximum so far is this one's once it exceeds the last)."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "subset.json"
        command = [sys.executable, "-m", "effigy.cli", "flasheval", "search", "--scores", str(tree), "--size", "50",
                   "--subsets", str(subsets), "--out", str(out), "--json"]
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        seconds = time.perf_counter() - start
        record = json.loads(done.stdout)
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    left_out = [line for line in done.stderr.splitlines() if "left out" in line]
    return {"subsets": subsets, "seconds": seconds, "peak_rss_mb": peak_mb, "left_out_lines": len(left_out),
            "heldout_tau": record["ImageReward"]["heldout_tau"], "command": " ".join(command[1:])}


def main(root: Path) -> None:
    tree = root / "Image_score" / "COCO" / "ImageReward"
    rows = [run(tree, subsets) for subsets in SUBSETS]  # ascending: each peak is at least the one before
    record = {"script": "benchmarks/scripts/flasheval_search_cost.py", "tree": str(tree),
              "release": "thu-nics/FlashEval a790c99", "rows": rows, "machine": machine_facts()}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "flasheval_search_cost.json").write_text(json.dumps(record, indent=1) + "\n")
    columns = [("subsets", "subsets per round"), ("seconds", "wall s"), ("peak_rss_mb", "peak RSS MB (of this and the runs before)"),
               ("left_out_lines", "left-out lines"), ("heldout_tau", "held-out tau")]
    text = ["# `effigy flasheval search` on the released COCO ImageReward tree", "",
            f"`python benchmarks/scripts/flasheval_search_cost.py {root}` (FlashEval a790c99; 64 complete models x "
            "40,504 prompts, 12 files left out with a line each; size 50, seed 0, 8 rounds), each search in a fresh "
            "process.  ", machine_line(record["machine"]), "", markdown_table(rows, columns), ""]
    (OUT / "flasheval_search_cost.md").write_text("\n".join(text))


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "FlashEval"))
