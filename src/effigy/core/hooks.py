"""One way to watch a model run: hooks registered on named modules for the length of a block, removed whatever
happens in it.

Calibration (observers on layer inputs), sensitivity (recording a run's denoiser calls), the first-token
measurement and the KV reparameterisation all "register hooks, run, remove in finally"; they do it through
:func:`observing`, so no hook outlives its run. Hooks that stay on a model (attention plans, caches) follow
:mod:`effigy.nn.hooks` instead.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterable, Iterator

WHEN = ("before", "after")


@contextmanager
def observing(model, targets: Iterable[str], fn: Callable, when: str = "before",
              with_kwargs: bool = False) -> Iterator[None]:
    """Call ``fn(name, module, args[, kwargs][, output])`` on every forward of each named submodule of ``model``
    (``""`` names the model itself) while the block runs.

    Args:
        model: a ``torch.nn.Module``.
        targets: submodule names, as ``model.get_submodule`` reads them.
        fn: called with the submodule's name, then torch's hook arguments; what it returns is what torch's
            hook returns (None: inputs and outputs unchanged).
        when: ``"before"`` (a forward pre-hook: the inputs) or ``"after"`` (a forward hook: the output too).
        with_kwargs: also pass the call's keyword arguments.

    >>> with observing(model, ["blocks.0.attn"], lambda name, module, args: seen.append(args[0].shape)):  # doctest: +SKIP
    ...     model(x)
    """
    if when not in WHEN:
        raise ValueError(f"when must be one of {WHEN}, got {when!r}")
    handles = []
    try:
        for name in targets:
            module = model.get_submodule(name)
            hook = _named(fn, name)
            register = module.register_forward_pre_hook if when == "before" else module.register_forward_hook
            handles.append(register(hook, with_kwargs=with_kwargs))
        yield
    finally:
        for handle in handles:
            handle.remove()


def _named(fn: Callable, name: str) -> Callable:
    return lambda *args: fn(name, *args)
