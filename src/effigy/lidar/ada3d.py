"""Ada3D (Zhao et al., ICCV 2023, https://arxiv.org/abs/2307.08209): adaptive input filtering for a voxel
lidar detector.

A light importance predictor scores each BEV cell from a cheap raster of the input voxels; the least important
occupied cells are removed before the 3D backbone (their voxels) and before and between the 2D stages (the BEV
cells), so the sparse layers have fewer sites to compute. The 2D backbone's BatchNorms become
sparsity-preserving (``effigy.nn.sparse_norm``), so an empty cell stays zero through it and the dense layers can
run on the active cells alone (a regular sparse convolution of the zero-filled map is the dense convolution).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from effigy.errors import PlanError
from effigy.models.lidar.centerpoint import CenterPoint, CenterPointConfig, voxelize
from effigy.models.lidar.centerpoint import to_bev as fold_height
from effigy.models.lidar.train import detect
from effigy.nn.sparse import SparseTensor, select_sites, site_keys, sites_of_keys, sparse_conv
from effigy.nn.sparse_norm import SparsityPreservingBatchNorm

EMPTY_LOGIT = -20.0  # heatmap logit of a cell the sparse run never computed: no detection there


@dataclass(frozen=True)
class Ada3DConfig:
    """What Ada3D keeps.

    Args:
        keep_3d: share of each frame's occupied BEV cells whose voxels enter the 3D backbone (1 keeps all).
        keep_2d: share of each frame's occupied BEV cells kept at the 2D backbone's input and after each stage.
        sparse_2d: run the 2D backbone and head on the active cells only (needs sparsity-preserving norms to
            equal the dense run); False runs them dense with the filtered cells zeroed (for training, and for
            a detector whose norms are plain BatchNorms, which fill the empty cells).
        refilter_2d: keep the same number of cells again after each 2D stage (the map shrinks back to the
            input's kept count); False filters the 2D input only and lets the stages' kernels grow the map
            (more context around each kept cell at the same input budget).
    """

    keep_3d: float = 0.6
    keep_2d: float = 0.3
    sparse_2d: bool = True
    refilter_2d: bool = True

    def __post_init__(self) -> None:
        for name in ("keep_3d", "keep_2d"):
            value = getattr(self, name)
            if not 0 < value <= 1:
                raise PlanError(f"{name} = {value}: a kept share must be in (0, 1].")


@dataclass
class FilterTally:
    """What a filtered run computed: voxels and BEV cells kept, density after each 2D stage, multiply-adds."""

    voxels_in: int = 0
    voxels_kept: int = 0
    bev_occupied: int = 0
    bev_cells: int = 0
    density_after_stage: list[float] = field(default_factory=list)
    macs_3d: int = 0
    macs_2d: int = 0
    seconds_3d: float = 0.0  # voxelizing, scoring, filtering, the 3D backbone and the fold to BEV
    seconds_2d: float = 0.0  # the 2D backbone and the head


class TallyTotals:
    """What filtered runs kept and computed, summed over calls (shares of the totals, not means of shares)."""

    def __init__(self) -> None:
        self.sum = FilterTally()

    def add(self, tally: FilterTally) -> None:
        s = self.sum
        for name in ("voxels_in", "voxels_kept", "bev_occupied", "bev_cells", "macs_3d", "macs_2d"):
            setattr(s, name, getattr(s, name) + getattr(tally, name))
        weighted = [d * tally.bev_cells for d in tally.density_after_stage]
        s.density_after_stage = [a + b for a, b in zip(s.density_after_stage or [0.0] * len(weighted), weighted)]

    @property
    def voxels_kept(self) -> float:
        return self.sum.voxels_kept / max(1, self.sum.voxels_in)

    def row(self, frames: int) -> dict:
        """Shares kept, density after each 2D stage, and multiply-adds per frame."""
        s = self.sum
        return {"voxels_kept": self.voxels_kept, "bev_occupied": s.bev_occupied / max(1, s.bev_cells),
                "density_after_stage": [d / max(1, s.bev_cells) for d in s.density_after_stage],
                "macs_3d_per_frame": s.macs_3d / frames, "macs_2d_per_frame": s.macs_2d / frames}


@torch.no_grad()
def detect_and_tally(model: Ada3D, frames: list, forward: Callable | None = None) -> tuple[list[dict], TallyTotals]:
    """Detections per frame (as ``effigy.models.lidar.train.detect``) and what the filter kept over all frames;
    ``forward`` replaces ``model(points)`` (a wrapper that must still run ``model``, whose tally is read)."""
    totals = TallyTotals()

    def run(points: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        outputs = (forward or model)(points)
        totals.add(model.tally)
        return outputs

    return detect(model.detector, frames, forward=run), totals


class ImportancePredictor(nn.Module):
    """A small 2D CNN on the input raster: one logit per BEV cell (is an object centre near?)."""

    def __init__(self, cin: int = 6, width: int = 16) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(cin, width, 3, padding=1), nn.ReLU(),
                                 nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
                                 nn.Conv2d(width, 1, 1))
        nn.init.constant_(self.net[-1].bias, -2.19)

    def forward(self, raster: torch.Tensor) -> torch.Tensor:
        return self.net(raster)


@dataclass
class BevCells:
    """The occupied BEV cells of a voxel tensor (``sites`` [M, 3]: batch, y, x; sorted) and the cell of each
    voxel (``of_voxel`` [N], a row of ``sites``): computed once, read by the raster and by the filter."""

    sites: torch.Tensor
    of_voxel: torch.Tensor
    shape: tuple[int, int]


def bev_cells(voxels: SparseTensor, stride: int) -> BevCells:
    """Which BEV cell (``stride`` x ``stride`` voxel columns) each voxel is in: one integer key per voxel."""
    _, ny, nx = voxels.spatial_shape
    shape = (math.ceil(ny / stride), math.ceil(nx / stride))
    cells = torch.stack([voxels.indices[:, 0], voxels.indices[:, 2] // stride, voxels.indices[:, 3] // stride], 1)
    unique, inverse = torch.unique(site_keys(cells, shape), return_inverse=True)
    return BevCells(sites_of_keys(unique, shape), inverse, shape)


def input_raster(voxels: SparseTensor, stride: int, cells: BevCells | None = None) -> SparseTensor:
    """The BEV raster the predictor reads: per occupied cell (stride x stride voxel columns), the max of the
    voxels' features (position, intensity, log count) and the log of its voxel count. Detached: the predictor
    learns on its own loss."""
    cells = cells or bev_cells(voxels, stride)
    features = voxels.features.detach()
    pooled = features.new_full((len(cells.sites), features.shape[1]), -1e4)
    pooled = pooled.scatter_reduce(0, cells.of_voxel[:, None].expand_as(features), features, "amax")
    count = torch.zeros(len(cells.sites)).index_add_(0, cells.of_voxel, torch.ones(len(cells.of_voxel)))
    return SparseTensor(torch.cat([pooled, torch.log1p(count)[:, None]], dim=1), cells.sites, cells.shape,
                        voxels.batch_size)


def keep_counts(sites: torch.Tensor, keep: float, batch_size: int) -> torch.Tensor:
    """[B] how many of each frame's occupied ``sites`` a ``keep`` share is (rounded up)."""
    occupied = torch.bincount(sites[:, 0], minlength=batch_size)
    return torch.ceil(keep * occupied.double()).long()


def top_cells(scores: torch.Tensor, sites: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """[N] True for the ``counts[b]`` sites (b, y, x) of each frame b with the highest ``scores`` [B, H, W]
    (ties: the earlier site). All frames at once: sites sorted by score, then stably by frame, so each site's
    rank within its frame is its position less the frame's first position."""
    values = scores[sites[:, 0], sites[:, 1], sites[:, 2]]
    order = torch.argsort(values, descending=True, stable=True)
    order = order[torch.argsort(sites[order, 0], stable=True)]
    frame = sites[order, 0]
    per_frame = torch.bincount(frame, minlength=len(counts))
    first = torch.cumsum(per_frame, 0) - per_frame
    chosen = torch.zeros(len(sites), dtype=torch.bool)
    chosen[order] = torch.arange(len(sites)) - first[frame] < counts[frame]
    return chosen


class Ada3D(nn.Module):
    """A detector that filters its input by predicted importance (and runs its 2D part sparse).

    Args:
        detector: a ``CenterPoint``; for ``sparse_2d``, with sparsity-preserving norms
            (:func:`sparsity_preserving`) so that the sparse run equals a dense run of the kept cells.
        config: the keep shares.
        predictor: the importance predictor (a fresh one by default; see ``effigy.lidar.training``).
    After each call, ``tally`` says what was kept and computed.
    """

    def __init__(self, detector: CenterPoint, config: Ada3DConfig = Ada3DConfig(),
                 predictor: ImportancePredictor | None = None) -> None:
        super().__init__()
        self.detector, self.config = detector, config
        self.predictor = predictor or ImportancePredictor()
        self.scorer: Callable[[SparseTensor, CenterPointConfig], torch.Tensor] | None = None
        self.tally = FilterTally()

    @property
    def filters(self) -> bool:
        return self.config.keep_3d < 1 or self.config.keep_2d < 1

    def scores(self, voxels: SparseTensor, cells: BevCells | None = None) -> torch.Tensor:
        """[B, H, W] importance of each BEV cell (``scorer`` replaces the predictor for the baselines)."""
        if self.scorer is not None:
            return self.scorer(voxels, self.detector.config)
        return torch.sigmoid(self.importance_logits(voxels, cells))[:, 0]

    def importance_logits(self, voxels: SparseTensor, cells: BevCells | None = None) -> torch.Tensor:
        """[B, 1, H, W] the predictor's logit per BEV cell (empty cells read an all-zero raster)."""
        return self.predictor(input_raster(voxels, self.detector.config.bev_stride, cells).dense())

    def forward(self, points: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        tally = self.tally = FilterTally()
        start = time.perf_counter()
        voxels = voxelize(points, self.detector.config)
        tally.voxels_in = tally.voxels_kept = len(voxels.indices)
        cells = bev_cells(voxels, self.detector.config.bev_stride) if self.filters else None
        scores = self.scores(voxels, cells) if self.filters else None
        if self.config.keep_3d < 1:
            voxels = self._filter_voxels(voxels, scores, cells, tally)
        bev = fold_height(self._backbone_3d(voxels, tally))
        tally.bev_occupied, tally.bev_cells = len(bev.indices), bev.batch_size * math.prod(bev.spatial_shape)
        budget = keep_counts(bev.indices, self.config.keep_2d, bev.batch_size)
        if self.config.keep_2d < 1:
            bev = select_sites(bev, top_cells(scores, bev.indices, budget))
        middle = time.perf_counter()
        run = self._sparse_2d if self.config.sparse_2d else self._masked_dense_2d
        outputs = run(bev, scores, budget, tally)
        tally.seconds_3d, tally.seconds_2d = middle - start, time.perf_counter() - middle
        return outputs

    def _filter_voxels(self, voxels: SparseTensor, scores: torch.Tensor, cells: BevCells,
                       tally: FilterTally) -> SparseTensor:
        """The voxels of the top ``keep_3d`` share of each frame's occupied cells."""
        kept = top_cells(scores, cells.sites, keep_counts(cells.sites, self.config.keep_3d, voxels.batch_size))
        voxels = select_sites(voxels, kept[cells.of_voxel])
        tally.voxels_kept = len(voxels.indices)
        return voxels

    def _backbone_3d(self, x: SparseTensor, tally: FilterTally) -> SparseTensor:
        for layer in self.detector.backbone_3d.layers:
            tally.macs_3d += layer.conv.macs(x)
            x = layer(x)
        return x

    def _sparse_2d(self, bev: SparseTensor, scores: torch.Tensor, budget: torch.Tensor,
                   tally: FilterTally) -> dict[str, torch.Tensor]:
        for stage in self.detector.backbone_2d.stages:
            bev = run_stage_sparse(stage, bev, tally)
            tally.density_after_stage.append(len(bev.indices) / tally.bev_cells)
            if self.config.keep_2d < 1 and self.config.refilter_2d:
                bev = select_sites(bev, top_cells(scores, bev.indices, budget))
        head = self.detector.head
        shared = run_stage_sparse(head.shared, bev, tally)
        outputs = {}
        for name, empty in (("heatmap", EMPTY_LOGIT), ("regression", 0.0)):
            branch = getattr(head, name)
            features = run_stage_sparse(branch[0], shared, tally)
            final = branch[1]
            tally.macs_2d += len(features.indices) * final.in_channels * final.out_channels
            cells = features.replace(features.features @ final.weight[:, :, 0, 0].T + final.bias)
            outputs[name] = _scatter(cells, empty)
        return outputs

    def _masked_dense_2d(self, bev: SparseTensor, scores: torch.Tensor, budget: torch.Tensor,
                         tally: FilterTally) -> dict[str, torch.Tensor]:
        """The sparse run's arithmetic on dense maps: the cells a sparse run would hold are tracked as a mask
        (each 3x3 conv grows it by one cell), the same cells are kept after each stage, the rest zeroed. With
        plain BatchNorms the empty cells fill up, so the map is dense and the density says so."""
        x, mask = bev.dense(), _occupancy(bev)
        for stage in self.detector.backbone_2d.stages:
            x = stage(x)
            mask = _grow(mask, _conv_count(stage))
            live = mask | x.ne(0).any(dim=1)
            tally.density_after_stage.append(float(live.float().mean()))
            if self.config.keep_2d < 1 and self.config.refilter_2d:
                mask = _keep_top(live, scores, budget)
                x = x * mask[:, None]
            else:
                mask = live
        tally.macs_2d += bev.batch_size * dense_2d_macs(self.detector)
        outputs = self.detector.head(x)
        if self.config.keep_2d >= 1:
            return outputs  # nothing filtered: the dense detector itself
        computed = _grow(mask, 2)[:, None]  # the head's shared conv and each branch's 3x3 conv
        return {"heatmap": torch.where(computed, outputs["heatmap"], EMPTY_LOGIT),
                "regression": torch.where(computed, outputs["regression"], 0.0)}


def _keep_top(live: torch.Tensor, scores: torch.Tensor, budget: torch.Tensor) -> torch.Tensor:
    sites = live.nonzero()
    kept = sites[top_cells(scores, sites, budget)]
    mask = torch.zeros_like(live)
    mask[kept[:, 0], kept[:, 1], kept[:, 2]] = True
    return mask


def _occupancy(x: SparseTensor) -> torch.Tensor:
    mask = torch.zeros(x.batch_size, *x.spatial_shape, dtype=torch.bool)
    mask[tuple(x.indices.long().T)] = True
    return mask


def _grow(mask: torch.Tensor, steps: int) -> torch.Tensor:
    """The cells a chain of ``steps`` 3x3 regular convolutions reaches from ``mask``."""
    grown = mask[:, None].float()
    for _ in range(steps):
        grown = F.max_pool2d(grown, 3, 1, 1)
    return grown[:, 0].bool()


def _conv_count(stage: nn.Sequential) -> int:
    return sum(isinstance(m, nn.Conv2d) for m in stage)


def _scatter(cells: SparseTensor, empty: float) -> torch.Tensor:
    """Dense [B, C, H, W] from active cells, ``empty`` elsewhere."""
    dense = cells.features.new_full((cells.batch_size, *cells.spatial_shape, cells.features.shape[1]), empty)
    dense[tuple(cells.indices.long().T)] = cells.features
    return dense.movedim(-1, 1)


def sparsity_preserving(detector: CenterPoint) -> CenterPoint:
    """The detector with every BatchNorm of its 2D backbone and head replaced by a sparsity-preserving one,
    initialised from the BatchNorm's scale and running variance (its mean and bias are dropped: fine-tune
    after this)."""
    for parent in (detector.backbone_2d, detector.head):
        for name, module in list(parent.named_modules()):
            if isinstance(module, nn.BatchNorm2d):
                replacement = SparsityPreservingBatchNorm(module.num_features, module.eps, module.momentum)
                with torch.no_grad():
                    replacement.weight.copy_(module.weight)
                    replacement.running_var.copy_(module.running_var)
                owner = parent.get_submodule(name.rsplit(".", 1)[0]) if "." in name else parent
                setattr(owner, name.rsplit(".", 1)[-1], replacement)
    return detector


def run_stage_sparse(stage: nn.Sequential, x: SparseTensor, tally: FilterTally) -> SparseTensor:
    """A ``conv_stage`` (conv, norm, ReLU, ...) on active cells: regular sparse convs with the dense weights."""
    for module in stage:
        if isinstance(module, nn.Conv2d):
            x = sparse_conv(x, module.weight)
            tally.macs_2d += x.made_by.macs(module.in_channels, module.out_channels)
        else:
            x = x.replace(module(x.features))
    return x


def dense_2d_macs(detector: CenterPoint) -> int:
    """Multiply-adds of the dense 2D backbone and head on one frame's whole BEV grid."""
    h, w = detector.config.bev_shape
    convs = [m for part in (detector.backbone_2d, detector.head) for m in part.modules() if isinstance(m, nn.Conv2d)]
    return sum(h * w * m.kernel_size[0] * m.kernel_size[1] * m.in_channels * m.out_channels for m in convs)


def random_scores(seed: int = 0) -> Callable[[SparseTensor, CenterPointConfig], torch.Tensor]:
    """The random-filtering baseline: every BEV cell scored at random (seeded)."""
    generator = torch.Generator().manual_seed(seed)

    def score(voxels: SparseTensor, config: CenterPointConfig) -> torch.Tensor:
        return torch.rand(voxels.batch_size, *config.bev_shape, generator=generator)
    return score


def distance_scores(voxels: SparseTensor, config: CenterPointConfig) -> torch.Tensor:
    """The distance baseline: cells nearer the sensor first (far returns are sparse and least reliable)."""
    h, w = config.bev_shape
    ys = config.point_range[1] + (torch.arange(h) + 0.5) * config.cell_size
    xs = config.point_range[0] + (torch.arange(w) + 0.5) * config.cell_size
    distance = torch.sqrt(ys[:, None] ** 2 + xs[None, :] ** 2)
    return (-distance).expand(voxels.batch_size, h, w)
