"""Does `effigy serve` hold load? (issue 45: micro-batching against the one-at-a-time service, side by side)

The service with the shipped `deepfake-authguard` on an ephemeral loopback port (in this process, as
`effigy serve` runs it), 200 uploads of face-world crops (PNG, real and forged) with 8 in flight: throughput,
p50 / p99 latency, the status codes (503s are the bounded queue refusing, by design), and the process's resident
memory before and after. Three services in one run: micro-batching (the default settings), the same service
scoring one upload per model call (max_batch 1, no wait: the one-at-a-time service), and micro-batching with one
upload in flight (the sequential reference, where batching cannot help).

    python benchmarks/scripts/serve_load.py      # ~1 min on 2 cores

Writes benchmarks/results/checks/serve_load.{json,md}.
"""
import io
import json
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
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


def client_main(url: str, count: int, in_flight: int) -> None:
    """The load client, in its own process (as clients are): ``in_flight`` threads, each keeping one connection
    open, ``count`` uploads in all; one JSON line of status codes and latencies out."""
    bodies = uploads(count)
    local = threading.local()

    def send(body: bytes) -> tuple[int, float]:
        if not hasattr(local, "client"):
            local.client = httpx.Client(timeout=60)
        start = time.perf_counter()
        status = local.client.post(url + "detect", files={"image": ("face.png", body, "image/png")}).status_code
        return status, time.perf_counter() - start

    start = time.perf_counter()
    with ThreadPoolExecutor(in_flight) as pool:
        answers = list(pool.map(send, bodies))
    print(json.dumps({"seconds": time.perf_counter() - start, "answers": answers}))


def load(url: str, count: int, in_flight: int) -> dict:
    """Throughput, latencies and status codes of ``count`` uploads sent by a client process; the server's (this
    process's) resident memory before and after."""
    process = psutil.Process()
    before = process.memory_info().rss
    done = subprocess.run([sys.executable, __file__, "--client", url, str(count), str(in_flight)],
                          capture_output=True, text=True, timeout=600, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    answers, seconds = result["answers"], result["seconds"]
    latencies = np.array([t for s, t in answers if s == 200])
    return {"in_flight": in_flight, "uploads": count, "seconds": seconds,
            "answered_per_s": sum(s == 200 for s, _ in answers) / seconds,
            "p50_ms": 1000 * float(np.percentile(latencies, 50)), "p99_ms": 1000 * float(np.percentile(latencies, 99)),
            "status": dict(Counter(str(s) for s, _ in answers)),
            "rss_before_mib": before / 2**20, "rss_after_mib": process.memory_info().rss / 2**20}


SERVICES = (("micro-batching", {}, 8), ("one at a time", {"max_batch": 1, "max_wait_s": 0.0}, 8),
            ("micro-batching", {}, 1), ("micro-batching, overloaded", {"max_pending": 4}, 16))


def run_service(detector: Detector, changes: dict, in_flight: int) -> dict:
    """One service with ``changes`` to the default settings, warmed, then loaded; stopped after."""
    settings = replace(ServiceSettings(docs=False), **changes)
    sock = bind("127.0.0.1", 0)
    server = service_server(create_app(settings, detector), settings)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    url = url_of(sock)
    load(url, 32, 8)  # warm every path and batch size
    row = load(url, UPLOADS, in_flight)
    health = httpx.get(url + "health").json()
    row.update(batches=health["batches"], mean_batch=health["mean_batch"])
    server.should_exit = True
    thread.join(10)
    return {"max_batch": settings.max_batch, "max_wait_ms": 1000 * settings.max_wait_s, **row}


def main() -> None:
    detector = Detector(ServiceSettings().model)
    rss_start = psutil.Process().memory_info().rss / 2**20
    rows = [{"service": name, **run_service(detector, changes, in_flight)}
            for name, changes, in_flight in SERVICES]
    rss_end = psutil.Process().memory_info().rss / 2**20
    speedup = rows[0]["answered_per_s"] / rows[1]["answered_per_s"]
    for row in rows:
        row["status"] = ", ".join(f"{k}: {v}" for k, v in sorted(row["status"].items()))
    settings = ServiceSettings()
    record = {"script": "benchmarks/scripts/serve_load.py", "model": settings.model, "workers": settings.workers,
              "max_pending": settings.max_pending, "request_timeout_s": settings.request_timeout, "rows": rows,
              "batching_speedup": speedup, "rss_start_mib": rss_start, "rss_end_mib": rss_end,
              "machine": machine_facts()}
    columns = [("service", "service"), ("max_batch", "max batch"), ("max_wait_ms", "max wait ms"),
               ("in_flight", "uploads in flight"), ("uploads", "uploads"), ("answered_per_s", "answered / s"),
               ("p50_ms", "p50 ms"), ("p99_ms", "p99 ms"), ("status", "status codes"), ("mean_batch", "mean batch"),
               ("rss_before_mib", "RSS before (MiB)"), ("rss_after_mib", "RSS after (MiB)")]
    text = ["# `effigy serve` under load: micro-batching against one upload at a time (issue 45)", "",
            f"`python benchmarks/scripts/serve_load.py`: the service with `{settings.model}` on a loopback port in "
            f"this process ({settings.workers} decoding worker, one batching thread running the model in eager "
            "fp32 PyTorch: the detectors have no compiled or bf16 path yet; at most "
            f"{settings.max_pending} uploads admitted, 503 beyond, {settings.request_timeout:g} s request timeout), "
            f"{UPLOADS} uploads of 64x64 face-world crops (PNG) per service from a client in its own process (one "
            "thread and one kept-alive connection per upload in flight). "
            "Three services side by side in one run.  ", machine_line(record["machine"]), "",
            markdown_table(rows, columns), "",
            f"Micro-batching answers **{speedup:.2f}x** the uploads a second of the one-at-a-time service at 8 in "
            f"flight. Resident memory of the process: {rss_start:.0f} MiB before the first service, "
            f"{rss_end:.0f} MiB after the last ({100 * (rss_end / rss_start - 1):+.1f}%, the first requests' "
            "allocations included; each run above is measured after its service's warm-up). The last service admits "
            "4 uploads at a time and is sent 16 at once: its refusals are the bounded queue's deliberate 503s "
            "(busy, retry in a moment), answered at once.", ""]
    write_results(record, "\n".join(text), OUT, "serve_load")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--client"]:
        client_main(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    else:
        main()
