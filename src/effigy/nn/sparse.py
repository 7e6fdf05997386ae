"""Sparse convolution in plain PyTorch: rulebooks from a dense table of site rows, then gathers and matmuls.

spconv's CPU build runs its backward through CUDA, and torchsparse / MinkowskiEngine have no wheels here, so
effigy computes on active sites itself. A ``SparseTensor`` holds features [N, C] at integer sites
[N, 1 + D] (batch index, then D spatial coordinates). A convolution's *rulebook* says, for each output site
and kernel offset, which input row it reads (each site one integer key, read through a flat table of rows on
a small grid and found by a sorted search on a large one, whose cost follows the sites). A well-filled rulebook
runs as one matmul over the gathered neighbourhoods; a sparse one per offset (gather, matmul,
``index_add_``). Rulebooks depend only on the sites, so layers that share sites share one (cached on the
tensor under a key, as spconv's ``indice_key``).

Three site rules:
- submanifold (``SubMConv``): outputs at exactly the input sites; the active set never grows.
- regular (``SparseConv``, stride 1 or more): outputs wherever the kernel reaches an input; a dense
  convolution of the zero-filled map equals it on those sites, and is zero elsewhere when the layer has no bias.
- inverse (``SparseInverseConv``): a strided layer's rulebook read backwards, back onto its input sites.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from effigy.errors import SparseError


@dataclass
class Rulebook:
    """For each output site and kernel offset, the input row it reads (-1: none); and the output sites."""

    neighbours: torch.Tensor  # [N_out, K] long
    out_indices: torch.Tensor
    out_shape: tuple[int, ...]
    _pairs: list[tuple[torch.Tensor, torch.Tensor]] | None = None

    @property
    def pairs(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per offset, the (input rows, output rows) it connects."""
        if self._pairs is None:
            self._pairs = []
            for column in self.neighbours.T:
                outputs = (column >= 0).nonzero().squeeze(1)
                self._pairs.append((column[outputs], outputs))
        return self._pairs

    @property
    def filled(self) -> float:
        return float((self.neighbours >= 0).float().mean()) if self.neighbours.numel() else 0.0

    @property
    def dense_gather(self) -> bool:
        return self.filled >= DENSE_GATHER

    def macs(self, in_channels: int, out_channels: int) -> int:
        """Multiply-adds the layer computes with this rulebook (a gathered matmul multiplies empty slots too)."""
        slots = self.neighbours.numel() if self.dense_gather else int((self.neighbours >= 0).sum())
        return slots * in_channels * out_channels


@dataclass
class SparseTensor:
    """``features`` [N, C] at ``indices`` [N, 1 + D] (batch, then spatial) in a ``spatial_shape`` grid."""

    features: torch.Tensor
    indices: torch.Tensor
    spatial_shape: tuple[int, ...]
    batch_size: int
    rulebooks: dict[str, Rulebook] = field(default_factory=dict)
    parent: SparseTensor | None = None  # for a strided layer's output: its input, and the rulebook between them
    made_by: Rulebook | None = None

    def __post_init__(self) -> None:
        if self.indices.dim() != 2 or self.indices.shape[1] != len(self.spatial_shape) + 1:
            raise SparseError(f"indices of shape {tuple(self.indices.shape)} do not fit a {len(self.spatial_shape)}-D "
                              "grid: give [N, 1 + D] integer sites (batch index first).")
        if len(self.features) != len(self.indices):
            raise SparseError(f"{len(self.features)} feature rows for {len(self.indices)} sites.")

    def replace(self, features: torch.Tensor) -> SparseTensor:
        """The same sites (and cached rulebooks, and the strided layer that made them) with other features."""
        return SparseTensor(features, self.indices, self.spatial_shape, self.batch_size, self.rulebooks, self.parent,
                            self.made_by)

    def dense(self) -> torch.Tensor:
        """[B, C, *spatial] with zeros at inactive sites."""
        out = self.features.new_zeros(self.batch_size, *self.spatial_shape, self.features.shape[1])
        out[tuple(self.indices.long().T)] = self.features
        return out.movedim(-1, 1).contiguous()

    @classmethod
    def from_dense(cls, dense: torch.Tensor) -> SparseTensor:
        """The non-zero sites of [B, C, *spatial] (a site is active when any channel is non-zero)."""
        active = dense.ne(0).any(dim=1)
        indices = active.nonzero()
        features = dense.movedim(1, -1)[tuple(indices.T)]
        return cls(features, indices, tuple(dense.shape[2:]), dense.shape[0])


def kernel_offsets(kernel_size: int, dims: int) -> torch.Tensor:
    """[K^D, D] every offset of a cubic kernel, in the weight's order."""
    return torch.tensor(list(itertools.product(range(kernel_size), repeat=dims)), dtype=torch.long)


def output_shape(shape: tuple[int, ...], kernel_size: int, stride: int, padding: int) -> tuple[int, ...]:
    return tuple((s + 2 * padding - kernel_size) // stride + 1 for s in shape)


POOL_PER_SITE = 64  # a grid up to this many cells per input site is pooled whole (measured: the 2D BEV map)
TABLE_PER_QUERY = 64  # a grid up to this many cells per lookup is read as a table of rows; larger, by search


def site_keys(indices: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """[N] one integer per site (batch, then each axis of ``shape``, row-major): equal keys, equal sites. The
    coordinates must lie in ``shape``."""
    key = indices[:, 0].long()
    for d, size in enumerate(shape):
        key = key * size + indices[:, 1 + d]
    return key


def _reached_sites(x: SparseTensor, kernel_size: int, stride: int, padding: int,
                   out_shape: tuple[int, ...]) -> torch.Tensor:
    """[M, 1 + D] the output sites some input reaches, sorted (batch, then each axis): on a small grid a max
    pool of the occupancy, on a large one from the sites themselves."""
    if x.batch_size * math.prod(x.spatial_shape) <= POOL_PER_SITE * len(x.indices):
        return _pooled_sites(x, kernel_size, stride, padding, out_shape)
    return _candidate_sites(x, kernel_size, stride, padding, out_shape)


def _pooled_sites(x: SparseTensor, kernel_size: int, stride: int, padding: int,
                  out_shape: tuple[int, ...]) -> torch.Tensor:
    """Output o reads the padded window [o * stride, o * stride + kernel_size) on each axis: a max pool of the
    padded occupancy says which windows hold an input."""
    occupancy = torch.zeros(x.batch_size, 1, *(s + padding + kernel_size for s in x.spatial_shape))
    idx = x.indices.long()
    occupancy[(idx[:, 0], 0, *(idx[:, 1 + d] + padding for d in range(len(out_shape))))] = 1.0
    pool = F.max_pool2d if len(out_shape) == 2 else F.max_pool3d
    reached = pool(occupancy, kernel_size, stride)[:, 0] > 0
    return reached[(slice(None), *(slice(0, s) for s in out_shape))].nonzero()


def _candidate_sites(x: SparseTensor, kernel_size: int, stride: int, padding: int,
                     out_shape: tuple[int, ...]) -> torch.Tensor:
    """Output o reads input o * stride - padding + k: per axis, the offsets k that land on a multiple of the
    stride give the candidate outputs (one or two per axis for a 3 x 3 kernel at stride 2, not K^D), combined
    and deduplicated. The cost follows the sites, not the grid."""
    dims = len(out_shape)
    idx = x.indices.long()
    offsets = torch.arange(kernel_size)
    reach = []  # per axis: [N, k] candidate coordinate and whether it is a real output
    for d in range(dims):
        shifted = idx[:, 1 + d, None] + padding - offsets
        valid = (shifted >= 0) & (shifted % stride == 0) & (shifted // stride < out_shape[d])
        reach.append((shifted.div(stride, rounding_mode="floor"), valid))
    valid = reach[0][1]
    for d in range(1, dims):
        valid = valid[..., None] & reach[d][1].reshape(len(idx), *([1] * d), kernel_size)
    rows, *ks = valid.nonzero().unbind(1)
    candidates = torch.stack([idx[rows, 0], *(reach[d][0][rows, ks[d]] for d in range(dims))], dim=1)
    return sites_of_keys(torch.unique(site_keys(candidates, out_shape)), out_shape)


def _look_up(keys: torch.Tensor, queries: torch.Tensor, grid_cells: int) -> torch.Tensor:
    """The row whose key each query is (-1: none). A small grid (the BEV map, a small voxel grid) is one flat
    table of rows, filled and read in two vectorised steps; a large one (a full KITTI voxel grid) a binary
    search in the sorted keys, whose cost follows the sites."""
    if grid_cells <= TABLE_PER_QUERY * max(1, queries.numel()):
        table = torch.full((grid_cells,), -1, dtype=torch.int32)
        table[keys] = torch.arange(len(keys), dtype=torch.int32)
        return table[queries].long()
    if len(keys) == 0:
        return torch.full(queries.shape, -1, dtype=torch.long)
    sorted_keys, order = torch.sort(keys)
    position = torch.searchsorted(sorted_keys, queries).clamp_(max=len(sorted_keys) - 1)
    return torch.where(sorted_keys[position] == queries, order[position], -1)


def sites_of_keys(keys: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """[N, 1 + len(shape)] the sites of ``keys`` (the inverse of :func:`site_keys`)."""
    columns = []
    for size in reversed(shape):
        columns.append(keys % size)
        keys = keys // size
    return torch.stack([keys, *reversed(columns)], dim=1)


def build_rulebook(x: SparseTensor, kernel_size: int, stride: int, padding: int, submanifold: bool) -> Rulebook:
    """Which input row each (output site, kernel offset) reads: output o and input i connect through offset k
    when i = o * stride - padding + k (for a submanifold layer, outputs are the input sites themselves). Sites
    become one integer key each in a grid padded by ``padding`` before and ``kernel_size`` after every axis (so
    an offset never wraps into the next row); each (output, offset) key is looked up among the input keys
    (:func:`_look_up`)."""
    if submanifold:
        if stride != 1 or 2 * padding != kernel_size - 1:
            raise SparseError("a submanifold layer keeps its sites: it needs stride 1 and padding (kernel - 1) / 2.")
        out_indices, out_shape = x.indices.long(), x.spatial_shape
    else:
        if len(x.spatial_shape) not in (2, 3):
            raise SparseError("regular sparse convolution is implemented for 2-D and 3-D grids, "
                              f"not {len(x.spatial_shape)}-D.")
        out_shape = output_shape(x.spatial_shape, kernel_size, stride, padding)
        out_indices = _reached_sites(x, kernel_size, stride, padding, out_shape)
    padded = tuple(s + padding + kernel_size for s in x.spatial_shape)
    inputs = x.indices.long().clone()
    inputs[:, 1:] += padding
    base = out_indices.clone()
    base[:, 1:] *= stride  # padded coordinate of offset 0
    offsets = site_keys(F.pad(kernel_offsets(kernel_size, len(padded)), (1, 0)), padded)  # key(b, c + k) = key(b, c) + key(0, k)
    queries = site_keys(base, padded)[:, None] + offsets
    neighbours = _look_up(site_keys(inputs, padded), queries, x.batch_size * math.prod(padded))
    return Rulebook(neighbours, out_indices, out_shape)


DENSE_GATHER = 0.3  # from this share of filled (output, offset) slots on, one gathered matmul beats per-offset adds


def apply_rulebook(features: torch.Tensor, weight: torch.Tensor, rulebook: Rulebook, out_rows: int,
                   transpose: bool = False) -> torch.Tensor:
    """Sum over offsets of the rows each output reads times the offset's weight [K, C_in, C_out]. Well-filled
    rulebooks run as one matmul over gathered neighbourhoods (empty slots read a zero row); sparse ones, and
    ``transpose`` (an inverse layer: from outputs back to inputs), as per-offset gathers and ``index_add_``."""
    if not transpose and rulebook.dense_gather:
        padded = torch.cat([features, features.new_zeros(1, features.shape[1])])
        rows = torch.where(rulebook.neighbours < 0, len(features), rulebook.neighbours)
        return padded[rows].reshape(len(rows), -1) @ weight.reshape(-1, weight.shape[2])
    out = features.new_zeros(out_rows, weight.shape[2])
    for k, (inputs, outputs) in enumerate(rulebook.pairs):
        if len(inputs) == 0:
            continue
        source, target = (outputs, inputs) if transpose else (inputs, outputs)
        out.index_add_(0, target, features[source] @ weight[k])
    return out


def sparse_conv(x: SparseTensor, weight: torch.Tensor, stride: int = 1, padding: int | None = None,
                submanifold: bool = False) -> SparseTensor:
    """A dense convolution's weight [C_out, C_in, k, ..., k] applied on ``x``'s active sites only (no bias):
    how a model trained dense runs sparse. The rulebook is cached on ``x`` like a layer's."""
    k, dims = weight.shape[-1], weight.dim() - 2
    padding = (k - 1) // 2 if padding is None else padding
    key = f"{'subm' if submanifold else 'conv'}{k}s{stride}p{padding}"
    if key not in x.rulebooks:
        x.rulebooks[key] = build_rulebook(x, k, stride, padding, submanifold)
    rulebook = x.rulebooks[key]
    kernel = weight.permute(*range(2, 2 + dims), 1, 0).reshape(k ** dims, weight.shape[1], weight.shape[0])
    features = apply_rulebook(x.features, kernel, rulebook, len(rulebook.out_indices))
    if submanifold:
        return x.replace(features)
    return SparseTensor(features, rulebook.out_indices, rulebook.out_shape, x.batch_size, parent=x, made_by=rulebook)


def select_sites(x: SparseTensor, keep: torch.Tensor) -> SparseTensor:
    """Only the rows where ``keep`` is True: the sites are gone (not masked), and so are the cached rulebooks."""
    return SparseTensor(x.features[keep], x.indices[keep], x.spatial_shape, x.batch_size)


class _SparseConvBase(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, dims: int, stride: int = 1,
                 padding: int | None = None, bias: bool = False, rulebook_key: str | None = None) -> None:
        super().__init__()
        self.kernel_size, self.dims, self.stride = kernel_size, dims, stride
        self.padding = (kernel_size - 1) // 2 if padding is None else padding
        self.rulebook_key = rulebook_key
        self.weight = nn.Parameter(torch.empty(kernel_size ** dims, in_channels, out_channels))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        nn.init.kaiming_uniform_(self.weight.view(-1, out_channels).T, a=math.sqrt(5))

    submanifold = False

    def rulebook(self, x: SparseTensor) -> Rulebook:
        """The pairs this layer connects on ``x`` (built once, then cached on ``x``)."""
        kind = "subm" if self.submanifold else "conv"
        key = self.rulebook_key or f"{kind}{self.kernel_size}s{self.stride}p{self.padding}"
        if key not in x.rulebooks:
            x.rulebooks[key] = build_rulebook(x, self.kernel_size, self.stride, self.padding, self.submanifold)
        return x.rulebooks[key]

    def macs(self, x: SparseTensor) -> int:
        """Multiply-adds of this layer on ``x``, as its rulebook computes them."""
        return self.rulebook(x).macs(self.weight.shape[1], self.weight.shape[2])

    def _check(self, x: SparseTensor) -> None:
        if len(x.spatial_shape) != self.dims:
            raise SparseError(f"a {self.dims}-D sparse layer got a {len(x.spatial_shape)}-D tensor.")
        if x.features.shape[1] != self.weight.shape[1]:
            raise SparseError(f"the layer takes {self.weight.shape[1]} channels, the tensor has {x.features.shape[1]}.")

    def _with_bias(self, features: torch.Tensor) -> torch.Tensor:
        return features if self.bias is None else features + self.bias


class SubMConv(_SparseConvBase):
    """Submanifold convolution: outputs at the input sites only, so the active set is kept."""

    submanifold = True

    def forward(self, x: SparseTensor) -> SparseTensor:
        self._check(x)
        rulebook = self.rulebook(x)
        return x.replace(self._with_bias(apply_rulebook(x.features, self.weight, rulebook, len(x.indices))))


class SparseConv(_SparseConvBase):
    """Regular sparse convolution: outputs wherever the kernel reaches an input site (strided or not)."""

    def forward(self, x: SparseTensor) -> SparseTensor:
        self._check(x)
        rulebook = self.rulebook(x)
        features = self._with_bias(apply_rulebook(x.features, self.weight, rulebook, len(rulebook.out_indices)))
        return SparseTensor(features, rulebook.out_indices, rulebook.out_shape, x.batch_size, parent=x, made_by=rulebook)


class SparseInverseConv(_SparseConvBase):
    """The transpose of the strided layer that made ``x``: back onto that layer's input sites."""

    def forward(self, x: SparseTensor) -> SparseTensor:
        if x.parent is None or x.made_by is None:
            raise SparseError("an inverse layer needs the output of a SparseConv (it reads that layer's rulebook).")
        self._check(x)
        features = apply_rulebook(x.features, self.weight, x.made_by, len(x.parent.indices), transpose=True)
        return x.parent.replace(self._with_bias(features))


def dense_weight(layer: _SparseConvBase) -> torch.Tensor:
    """The layer's weight as a dense ``conv{2,3}d`` weight [C_out, C_in, k, ..., k] (for checks)."""
    k, dims = layer.kernel_size, layer.dims
    return layer.weight.reshape(*([k] * dims), *layer.weight.shape[1:]).permute(dims + 1, dims, *range(dims))
