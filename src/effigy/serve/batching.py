"""Micro-batching for the detection service: the faces of many concurrent uploads scored in one model call.

Request threads decode uploads and find their faces; they hand the face crops to one batcher thread, which
waits for the first, gathers more until ``max_batch`` faces or ``max_wait_s`` have passed, runs the model once
on them all and answers each request with its own rows. On a CPU a batch of 8 crops costs far less than 8
calls of one (the same weights streamed once; the per-call overhead paid once), which is what Triton's dynamic
batcher and Ray Serve's ``@serve.batch`` do for GPUs. One thread runs the model, so its intra-op threads have
the cores to themselves.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Future
from typing import Callable

import numpy as np

log = logging.getLogger(__name__)


class MicroBatcher:
    """One thread scoring face crops from many requests in batches.

    Args:
        score: [N, 3, SIZE, SIZE] crops -> N results (one per crop, in order).
        max_batch: most crops in one model call (a request with more is still scored whole).
        max_wait_s: how long the first request of a batch waits for others to join it.
    """

    def __init__(self, score: Callable[[np.ndarray], list], max_batch: int = 16, max_wait_s: float = 0.01) -> None:
        self.score, self.max_batch, self.max_wait_s = score, max_batch, max_wait_s
        self.waiting: queue.Queue = queue.Queue()
        self.batches = 0
        self.crops = 0
        self.thread = threading.Thread(target=self._loop, name="effigy-serve-batcher", daemon=True)
        self.thread.start()

    def submit(self, crops: np.ndarray) -> Future:
        """A future of the results of ``crops`` [n, 3, SIZE, SIZE] (n >= 1)."""
        answer: Future = Future()
        self.waiting.put((crops, answer))
        return answer

    def close(self) -> None:
        """Stop the thread once the requests already submitted are answered."""
        self.waiting.put(None)
        self.thread.join(timeout=10)

    def _loop(self) -> None:
        while True:
            first = self.waiting.get()
            if first is None:
                return
            batch = self._gather(first)
            self._run(batch)
            if batch[-1] is None:
                return

    def _gather(self, first: tuple) -> list:
        """``first`` and what else arrives before the batch is full or its wait is over (a None last: close)."""
        batch, size = [first], len(first[0])
        deadline = time.perf_counter() + self.max_wait_s
        while size < self.max_batch:
            try:
                item = self.waiting.get(timeout=max(deadline - time.perf_counter(), 0.0))
            except queue.Empty:
                break
            batch.append(item)
            if item is None:
                break
            size += len(item[0])
        return batch

    def _run(self, batch: list) -> None:
        # a request that timed out meanwhile has cancelled its future: its crops are not scored
        work = [item for item in batch if item is not None and item[1].set_running_or_notify_cancel()]
        if not work:
            return
        try:
            results = self.score(np.concatenate([crops for crops, _ in work]))
        except Exception as error:  # every waiting request gets the error, the thread goes on
            for _, answer in work:
                answer.set_exception(error)
            return
        self.batches += 1
        self.crops += sum(len(crops) for crops, _ in work)
        start = 0
        for crops, answer in work:
            answer.set_result(results[start: start + len(crops)])
            start += len(crops)

    def stats(self) -> dict:
        """Batches run and the mean crops per batch (what /health reports)."""
        return {"batches": self.batches, "mean_batch": self.crops / self.batches if self.batches else 0.0}
