"""Hooks that stay on a model, in one convention (after diffusers' ``HookRegistry``): each is a named
:class:`ModelHook` that knows how to attach itself to a module and detach itself again, kept in the module's
registry under its name.

- :func:`attach_hook` attaches; a hook already attached under the same name is detached first, so applying
  a method twice leaves one copy of it (the newer).
- :func:`detach_hook` detaches and returns the hook, or returns None where none of that name is attached:
  a documented no-op, so cleanup code may call it unconditionally. Every ``remove_*`` of effigy (DiTFastAttn,
  LiteVAR, the timestep ranges, the FastVAR and diffusers-cache peers) is this call and behaves alike.
- :func:`reset_hooks` clears per-run state (step counters, caches) so the next sampling run starts afresh.

Torch-level hooks a :class:`ModelHook` registers are bound methods of the hook itself, and are found again by
their owner rather than by a saved handle: a ``copy.deepcopy`` of the module copies the registry and the torch
hooks together, and detaching from the copy leaves the original alone. Short-lived hooks (watch one run, then
remove) use :func:`effigy.core.hooks.observing` instead.
"""
from __future__ import annotations

import logging
from typing import Callable

from torch import nn

log = logging.getLogger(__name__)
REGISTRY = "_effigy_hooks"
_TORCH_HOOK_DICTS = ("_forward_pre_hooks", "_forward_hooks")
_TORCH_HOOK_FLAGS = ("_forward_pre_hooks_with_kwargs", "_forward_hooks_with_kwargs", "_forward_hooks_always_called")


class ModelHook:
    """A named, stateful change to how a module runs. Subclasses set ``name`` and implement ``attach`` and
    ``detach``; ``reset`` forgets per-run state (default: nothing to forget)."""

    name: str = ""

    def attach(self, module: nn.Module) -> None:
        raise NotImplementedError

    def detach(self, module: nn.Module) -> None:
        raise NotImplementedError

    def reset(self) -> None:
        pass

    def register(self, module: nn.Module, method: Callable, when: str = "before", with_kwargs: bool = False) -> None:
        """Register one of this hook's own bound methods as a torch forward (pre-)hook on ``module``;
        :meth:`unregister` finds it again by its owner."""
        register = module.register_forward_pre_hook if when == "before" else module.register_forward_hook
        register(method, with_kwargs=with_kwargs)

    def unregister(self, module: nn.Module) -> None:
        """Remove every torch hook on ``module`` that is a bound method of this hook."""
        for attribute in _TORCH_HOOK_DICTS:
            hooks = getattr(module, attribute)
            for key in [k for k, fn in hooks.items() if getattr(fn, "__self__", None) is self]:
                del hooks[key]
                for flags in _TORCH_HOOK_FLAGS:
                    getattr(module, flags, {}).pop(key, None)


def attach_hook(module: nn.Module, hook: ModelHook) -> ModelHook:
    """Attach ``hook`` to ``module`` under ``hook.name`` (detaching one of the same name first).

    Returns:
        The hook.
    """
    if not hook.name:
        raise ValueError(f"{type(hook).__name__} has no name to be registered under")
    if detach_hook(module, hook.name) is not None:
        log.info("%s was attached already: replaced", hook.name)
    hook.attach(module)
    module.__dict__.setdefault(REGISTRY, {})[hook.name] = hook
    return hook


def detach_hook(module: nn.Module, name: str) -> ModelHook | None:
    """Detach the hook attached under ``name``.

    Returns:
        The detached hook, or None (nothing done) where no hook of that name is attached.
    """
    hook = module.__dict__.get(REGISTRY, {}).pop(name, None)
    if hook is not None:
        hook.detach(module)
    return hook


def attached_hook(module: nn.Module, name: str) -> ModelHook | None:
    """The hook attached under ``name``, or None."""
    return module.__dict__.get(REGISTRY, {}).get(name)


def attached_hooks(module: nn.Module) -> list[str]:
    """The names of the hooks attached to ``module``, in attachment order."""
    return list(module.__dict__.get(REGISTRY, {}))


def reset_hooks(module: nn.Module, name: str | None = None) -> None:
    """Clear the per-run state of the hook ``name`` (every attached hook when None)."""
    hooks = module.__dict__.get(REGISTRY, {})
    for hook in ([hooks[name]] if name in hooks else [] if name is not None else list(hooks.values())):
        hook.reset()
