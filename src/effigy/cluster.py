"""Ray, effigy's one optional cluster engine (``flasheval build --executor ray``, ``serve --ray``,
``detect deepfake eval --ray``): how every command joins or starts it.

``RAY_ADDRESS`` (Ray's own variable) points at a running cluster (``ray start --head`` on one machine,
``ray start --address HEAD:6379`` on the others; or ``ray://HEAD:10001``); without it a local instance is
started for the command and stopped after it.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator

from effigy.errors import EffigyError

RAY_PIN = "ray==2.60.0"


def import_ray():
    """The ``ray`` module, or one clear error saying how to install it."""
    try:
        import ray
    except ImportError:
        raise EffigyError(f"this needs Ray: pip install 'effigy[ray]' ({RAY_PIN}).") from None
    return ray


@contextmanager
def ray_session(local_cpus: int | None = None) -> Iterator[object]:
    """Ray joined (``RAY_ADDRESS``) or started locally with ``local_cpus`` CPUs (None: all), yielding the
    module; a session this started is shut down after, one that was already running is left running."""
    ray = import_ray()
    address = os.environ.get("RAY_ADDRESS")
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, num_cpus=None if address else local_cpus, include_dashboard=False,
                 log_to_driver=False, configure_logging=False)
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()
