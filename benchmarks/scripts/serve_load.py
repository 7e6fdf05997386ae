"""How does `effigy serve` hold load today? (issue 45: the one-at-a-time baseline that micro-batching must beat)

The service with the shipped `deepfake-authguard` on an ephemeral loopback port (in this process, as
`effigy serve` runs it), 200 uploads of face-world crops (PNG, real and forged) with 8 in flight: throughput,
p50 / p99 latency, the status codes (503s are the bounded queue refusing, by design), and the process's resident
memory before and after. Then the same with one upload in flight, the sequential reference.

    python benchmarks/scripts/serve_load.py      # ~2 min on 2 cores

Writes benchmarks/results/checks/serve_load.{json,md}.
"""
import io
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import psutil
from PIL import Image

from effigy.evaluate.measure import machine_facts
from effigy.evaluate.report import machine_line, markdown_table, write_results
from effigy.serve.app import Detector, ServiceSettings, bind, create_app, service_server, url_of

OUT = Path("benchmarks/results/checks")
UPLOADS = 200


def uploads(count: int) -> list[bytes]:
    from effigy.detect.export import sample_crops

    encoded = []
    for crop in sample_crops(32):
        buffer = io.BytesIO()
        Image.fromarray((crop.transpose(1, 2, 0) * 255).astype(np.uint8)).save(buffer, "PNG")
        encoded.append(buffer.getvalue())
    return [encoded[i % len(encoded)] for i in range(count)]


def load(url: str, bodies: list[bytes], in_flight: int) -> dict:
    def send(body: bytes) -> tuple[int, float]:
        start = time.perf_counter()
        status = httpx.post(url + "detect", files={"image": ("face.png", body, "image/png")}, timeout=60).status_code
        return status, time.perf_counter() - start

    process = psutil.Process()
    before = process.memory_info().rss
    start = time.perf_counter()
    with ThreadPoolExecutor(in_flight) as pool:
        answers = list(pool.map(send, bodies))
    seconds = time.perf_counter() - start
    latencies = np.array([t for s, t in answers if s == 200])
    return {"in_flight": in_flight, "uploads": len(bodies), "seconds": seconds,
            "answered_per_s": sum(s == 200 for s, _ in answers) / seconds,
            "p50_ms": 1000 * float(np.percentile(latencies, 50)), "p99_ms": 1000 * float(np.percentile(latencies, 99)),
            "status": dict(Counter(str(s) for s, _ in answers)),
            "rss_before_mib": before / 2**20, "rss_after_mib": process.memory_info().rss / 2**20}


def main() -> None:
    settings = ServiceSettings(docs=False)
    sock = bind("127.0.0.1", 0)
    server = service_server(create_app(settings, Detector(settings.model)), settings)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    url = url_of(sock)
    bodies = uploads(UPLOADS)
    load(url, bodies[:16], 4)  # warm every path
    rows = [load(url, bodies, 8), load(url, bodies, 1)]
    server.should_exit = True
    thread.join(10)
    for row in rows:
        row["status"] = ", ".join(f"{k}: {v}" for k, v in sorted(row["status"].items()))
    record = {"script": "benchmarks/scripts/serve_load.py", "model": settings.model, "workers": settings.workers,
              "max_pending": settings.max_pending, "rows": rows, "machine": machine_facts()}
    columns = [("in_flight", "uploads in flight"), ("uploads", "uploads"), ("answered_per_s", "answered / s"),
               ("p50_ms", "p50 ms"), ("p99_ms", "p99 ms"), ("status", "status codes"),
               ("rss_before_mib", "RSS before (MiB)"), ("rss_after_mib", "RSS after (MiB)")]
    text = ["# `effigy serve` under load, one upload scored at a time (issue 45's baseline)", "",
            f"`python benchmarks/scripts/serve_load.py`: the service with `{settings.model}` on a loopback port in "
            f"this process ({settings.workers} scoring worker, at most {settings.max_pending} uploads admitted, "
            f"503 beyond), {UPLOADS} uploads of 64x64 face-world crops (PNG), 8 in flight and then 1. No "
            "micro-batching yet: each upload is decoded, searched for a face and scored alone.  ",
            machine_line(record["machine"]), "", markdown_table(rows, columns), ""]
    write_results(record, "\n".join(text), OUT, "serve_load")


if __name__ == "__main__":
    main()
