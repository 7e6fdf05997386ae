"""The micro-batcher alone: requests from many threads gathered into few model calls, each answered with its
own rows in order, an error answered to every request of its batch, and the thread stopped on close."""
import threading
import time

import numpy as np
import pytest

from effigy.serve.batching import MicroBatcher


def test_requests_from_many_threads_share_batches_and_get_their_own_rows():
    sizes = []

    def score(crops):
        sizes.append(len(crops))
        time.sleep(0.02)
        return [float(c.sum()) for c in crops]

    batcher = MicroBatcher(score, max_batch=8, max_wait_s=0.2)
    answers = {}

    def ask(i):
        crops = np.full((1 + i % 2, 3, 4, 4), float(i), np.float32)
        answers[i] = batcher.submit(crops).result(timeout=10)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    batcher.close()
    assert all(answers[i] == [48.0 * i] * (1 + i % 2) for i in range(10))
    assert sum(sizes) == 15 and len(sizes) < 10 and max(sizes) <= 9  # a request is never split across batches
    assert not batcher.thread.is_alive() and batcher.stats()["batches"] == len(sizes)


def test_a_failing_batch_fails_each_of_its_requests_and_the_next_batch_runs():
    calls = []

    def score(crops):
        calls.append(len(crops))
        if len(calls) == 1:
            raise ValueError("model broke")
        return [0.5] * len(crops)

    batcher = MicroBatcher(score, max_batch=4, max_wait_s=0.0)
    with pytest.raises(ValueError, match="model broke"):
        batcher.submit(np.zeros((1, 3, 4, 4))).result(timeout=10)
    assert batcher.submit(np.zeros((2, 3, 4, 4))).result(timeout=10) == [0.5, 0.5]
    batcher.close()


def test_a_cancelled_request_is_skipped_and_the_thread_goes_on():
    release = threading.Event()
    batcher = MicroBatcher(lambda crops: (release.wait(10), [1.0] * len(crops))[1], max_batch=1, max_wait_s=0.0)
    first = batcher.submit(np.zeros((1, 3, 4, 4)))
    time.sleep(0.1)  # the first is in the model; the second waits and is given up
    second = batcher.submit(np.zeros((1, 3, 4, 4)))
    assert second.cancel()
    release.set()
    assert first.result(timeout=10) == [1.0]
    assert batcher.submit(np.zeros((1, 3, 4, 4))).result(timeout=10) == [1.0]
    batcher.close()
    assert batcher.stats()["batches"] == 2
