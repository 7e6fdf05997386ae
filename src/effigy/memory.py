"""Bytes a model or cache really holds: every distinct tensor storage reachable from it, counted once.

Why not count parameters: a layer can keep unpacked or dequantized copies in attributes that no
``state_dict`` shows, and two views can share one storage. ``held_bytes`` walks parameters, buffers and
every attribute (lists, dicts, dataclasses, cache layers), and deduplicates by storage.

Prepacked kernel weights (fbgemm's ``LinearPackedParams``, a TorchScript object with no Python-visible
storage) are counted by their unpacked contents: int8 weights, per-channel scales and zero points and
bias, which is what the kernel keeps besides a few bytes of column offsets.
"""
from __future__ import annotations

import dataclasses
import types
from typing import Iterator

import torch
from torch.utils._python_dispatch import is_traceable_wrapper_subclass

_LEAF_TYPES = (str, bytes, int, float, bool, complex, type(None), types.ModuleType, types.FunctionType,
               types.BuiltinFunctionType, types.MethodType, type, torch.dtype, torch.device, torch.Size)


def held_bytes(obj: object) -> int:
    """Bytes of every distinct tensor storage reachable from ``obj`` (a module, a cache, a container).

    Args:
        obj: what to measure; typically an ``nn.Module`` or a ``transformers.Cache``.

    Returns:
        The summed ``nbytes`` of the distinct storages (shared storages and repeated references once).
    """
    storages: dict[tuple, int] = {}
    for leaf in _walk(obj, set()):
        key, nbytes = _script_object_storage(leaf) if isinstance(leaf, torch.ScriptObject) else _tensor_storage(leaf)
        storages[key] = nbytes
    return sum(storages.values())


def reachable_tensors(obj: object) -> list[torch.Tensor]:
    """Every tensor reachable from ``obj`` (each object once), for checks such as "no float copy is held"."""
    return [leaf for leaf in _walk(obj, set()) if isinstance(leaf, torch.Tensor)]


def _walk(obj: object, seen: set[int]) -> Iterator[object]:
    if isinstance(obj, _LEAF_TYPES) or id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor) and is_traceable_wrapper_subclass(obj):
        names, _ = obj.__tensor_flatten__()  # a wrapper (torchao's quantized weights): its inner tensors
        for name in names:
            yield from _walk(getattr(obj, name), seen)
    elif isinstance(obj, (torch.Tensor, torch.ScriptObject)):
        yield obj
    elif isinstance(obj, dict):
        for value in obj.values():
            yield from _walk(value, seen)
    elif isinstance(obj, (list, tuple, set, frozenset)):
        for value in obj:
            yield from _walk(value, seen)
    else:
        yield from _attributes(obj, seen)


def _tensor_storage(tensor: torch.Tensor) -> tuple[tuple, int]:
    if tensor.is_quantized:
        inner = tensor.int_repr()  # a quantized tensor's storage is not exposed; its integers are its size
        return ("quantized", id(tensor)), inner.numel() * inner.element_size()
    storage = tensor.untyped_storage()
    return (str(tensor.device), storage.data_ptr(), storage.nbytes()), storage.nbytes()


def _script_object_storage(obj: torch.ScriptObject) -> tuple[tuple, int]:
    try:
        weight, bias = torch.ops.quantized.linear_unpack(obj)
    except RuntimeError:
        return ("unknown", id(obj)), 0  # not a linear prepack: nothing we know how to measure
    size = weight.numel() * weight.element_size()
    if weight.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
        size += weight.q_per_channel_scales().nbytes + weight.q_per_channel_zero_points().nbytes
    if bias is not None:
        size += bias.nbytes
    return ("prepacked", id(obj)), size


def _attributes(obj: object, seen: set[int]) -> Iterator[object]:
    if isinstance(obj, torch.nn.Module):
        for value in (*obj._parameters.values(), *obj._buffers.values(), *obj._modules.values()):
            yield from _walk(value, seen)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for field in dataclasses.fields(obj):
            yield from _walk(getattr(obj, field.name, None), seen)
    attributes = getattr(obj, "__dict__", None)
    if isinstance(attributes, dict):
        yield from _walk(attributes, seen)


def glibc() -> object | None:
    """The C library as a ctypes handle where it is glibc (it has ``malloc_trim``), else None."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "malloc_trim") else None


def trim_freed_memory() -> bool:
    """Hand memory that is already free back to the OS (glibc ``malloc_trim``).

    After a conversion frees a model's float weights, glibc keeps much of that memory mapped in its heap
    (a converted DiT-XL/2 stays at the RSS of the float model and more); trimming makes the savings show
    in the process's resident memory. Returns False where this is not glibc (nothing changed).
    """
    libc = glibc()
    return libc is not None and bool(libc.malloc_trim(0))
