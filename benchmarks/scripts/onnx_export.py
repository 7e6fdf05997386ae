"""The detectors exported to ONNX and checked (issue 45): every shipped deepfake detector and the anti-spoofing
model, the largest difference between ONNX Runtime's and PyTorch's scores on 32 sample crops of the face
world's test identities (the bar: 1e-4), the file size, and ms per 32-crop batch for each (median of 5).

    python benchmarks/scripts/onnx_export.py      # ~1 min on 2 cores

Writes benchmarks/results/checks/onnx_export.{json,md}; the .onnx files go to a temporary folder.
"""
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime
import torch

from effigy.detect.export import LiveScore, export_onnx, sample_crops
from effigy.evaluate.measure import machine_facts
from effigy.evaluate.report import machine_line, markdown_table, write_results
from effigy.models.zoo import load_zoo_model

OUT = Path("benchmarks/results/checks")


def median_ms(fn, repeats: int = 5) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def main() -> None:
    crops = sample_crops(32)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name in ("deepfake-authguard", "deepfake-ce", "deepfake-clip", "fas-protonet"):
            loaded, config = load_zoo_model(name)
            module = LiveScore(loaded, config.scale) if name.startswith("fas") else loaded
            path = Path(folder) / f"{name}.onnx"
            record = export_onnx(module.eval(), path, crops, {"model": name})
            session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            with torch.no_grad():
                torch_ms = median_ms(lambda: module(torch.from_numpy(crops)))
            onnx_ms = median_ms(lambda: session.run(["scores"], {"images": crops}))
            rows.append({"model": name, "score": "P(live)" if name.startswith("fas") else "P(fake)",
                         "max_abs_difference": record["max_abs_difference"], "opset": record["opset"],
                         "mib": path.stat().st_size / 2**20, "torch_ms": torch_ms, "onnxruntime_ms": onnx_ms})
    record = {"script": "benchmarks/scripts/onnx_export.py", "crops": 32, "rows": rows, "machine": machine_facts()}
    columns = [("model", "model"), ("score", "score"), ("max_abs_difference", "largest difference, ONNX vs PyTorch"),
               ("opset", "opset"), ("mib", "file (MiB)"), ("torch_ms", "PyTorch eager ms / 32 crops"),
               ("onnxruntime_ms", "ONNX Runtime ms / 32 crops")]
    text = ["# The detectors as ONNX (issue 45)", "",
            "`python benchmarks/scripts/onnx_export.py`: `effigy.detect.export.export_onnx` on each shipped detector "
            "(dynamic batch), checked with ONNX Runtime against PyTorch on 32 crops of the face world's test "
            "identities (real, SBI and swap, across the capture domains); the bar is 1e-4. Times: median of 5 "
            "batches of 32, both on the CPU execution path.  ", machine_line(record["machine"]), "",
            markdown_table(rows, columns), ""]
    write_results(record, "\n".join(text), OUT, "onnx_export")


if __name__ == "__main__":
    main()
