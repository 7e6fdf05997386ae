"""A small CenterPoint-style lidar detector (Yin et al., https://arxiv.org/abs/2006.11275) on plain-PyTorch
sparse convolution: voxels -> sparse 3D backbone -> BEV -> 2D backbone -> centre heatmaps + box regression.

Sizes are the simulated world's: a 40 x 40 m area ahead of the car in 0.2 x 0.2 x 0.4 m voxels, BEV cells of
0.4 m (the 3D backbone strides 2 in x, y and z). The 2D backbone is a list of ``nn.Conv2d`` (no bias) + norm + ReLU
stages, so Ada3D can run the very same modules on active BEV cells only (``effigy.lidar``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from effigy.errors import ModelError
from effigy.models.config import TrainConfig
from effigy.nn.sparse import SparseConv, SparseTensor, SubMConv
from effigy.nn.sparse_norm import SparsityPreservingBatchNorm
from effigy.worlds.lidar import CLASSES

NORMS_2D = {"batch": nn.BatchNorm2d, "sparsity-preserving": SparsityPreservingBatchNorm}


@dataclass
class CenterPointConfig(TrainConfig):
    """Geometry, widths and training settings of the shipped detector (saved beside its weights)."""

    point_range: tuple[float, ...] = (0.0, -20.0, -3.0, 40.0, 20.0, 1.0)  # x, y, z min then max, metres
    voxel_size: tuple[float, ...] = (0.2, 0.2, 0.4)
    widths_3d: tuple[int, ...] = (16, 32)  # per 3D stage; every stage after the first starts with a stride-2 conv
    width_2d: int = 48
    layers_2d: tuple[int, ...] = (3, 2)  # 3x3 convs per 2D stage (all at BEV stride 1)
    head_width: int = 48
    norm_2d: str = "batch"  # or "sparsity-preserving": zeros stay zero through the 2D part (Ada3D, trained so)
    classes: tuple[str, ...] = CLASSES
    train_frames: int = 1000
    val_frames: int = 100
    train_steps: int = 8000
    batch_size: int = 2
    learning_rate: float = 2e-3
    weight_decay: float = 0.01
    seed: int = 0
    checkpoint_every: int = 250

    def __post_init__(self) -> None:
        for name in ("point_range", "voxel_size", "widths_3d", "layers_2d", "classes"):
            setattr(self, name, tuple(getattr(self, name)))
        if self.norm_2d not in NORMS_2D:
            raise ModelError(f"norm_2d {self.norm_2d!r}: choose one of {', '.join(NORMS_2D)}.")

    @property
    def grid(self) -> tuple[int, int, int]:
        """Voxels along (z, y, x)."""
        lo, hi = self.point_range[:3], self.point_range[3:]
        x, y, z = (round((hi[i] - lo[i]) / self.voxel_size[i]) for i in range(3))
        return z, y, x

    @property
    def bev_stride(self) -> int:
        return 2 ** (len(self.widths_3d) - 1)

    @property
    def bev_shape(self) -> tuple[int, int]:
        z, y, x = self.grid
        return y // self.bev_stride, x // self.bev_stride

    @property
    def bev_depth(self) -> int:
        z = self.grid[0]
        for _ in range(len(self.widths_3d) - 1):
            z = (z + 2 - 3) // 2 + 1
        return z

    @property
    def cell_size(self) -> float:
        return self.voxel_size[0] * self.bev_stride


def voxelize(points: list[torch.Tensor], config: CenterPointConfig) -> SparseTensor:
    """Points of each frame ([N, 4] x, y, z, intensity) -> one sparse tensor of voxels (batch, z, y, x) whose
    features are the mean point of the voxel (x, y, z, intensity) and the log of its point count."""
    lo = torch.tensor(config.point_range[:3])
    size = torch.tensor(config.voxel_size)
    z, y, x = config.grid
    sites, feats = [], []
    for b, frame in enumerate(points):
        cell = torch.floor((frame[:, :3] - lo) / size).long()
        inside = ((cell >= 0) & (cell < torch.tensor([x, y, z]))).all(dim=1)
        cell, frame = cell[inside], frame[inside]
        key = (cell[:, 2] * y + cell[:, 1]) * x + cell[:, 0]
        unique, inverse = torch.unique(key, return_inverse=True)
        count = torch.zeros(len(unique)).index_add_(0, inverse, torch.ones(len(key)))
        mean = torch.zeros(len(unique), 4).index_add_(0, inverse, frame[:, :4]) / count[:, None]
        sites.append(torch.stack([torch.full_like(unique, b), unique // (y * x), unique // x % y, unique % x], dim=1))
        feats.append(torch.cat([_normalise(mean, config), torch.log1p(count)[:, None]], dim=1))
    return SparseTensor(torch.cat(feats), torch.cat(sites), (z, y, x), len(points))


def _normalise(mean: torch.Tensor, config: CenterPointConfig) -> torch.Tensor:
    lo, hi = torch.tensor(config.point_range[:3]), torch.tensor(config.point_range[3:])
    return torch.cat([(mean[:, :3] - lo) / (hi - lo) * 2 - 1, mean[:, 3:4]], dim=1)


class SparseBlock(nn.Module):
    """A sparse conv (submanifold, or strided regular), BatchNorm over the active sites, ReLU."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv = SubMConv(cin, cout, 3, 3) if stride == 1 else SparseConv(cin, cout, 3, 3, stride=stride)
        self.norm = nn.BatchNorm1d(cout, eps=1e-3, momentum=0.01)

    def forward(self, x: SparseTensor) -> SparseTensor:
        x = self.conv(x)
        return x.replace(torch.relu(self.norm(x.features)))


class Backbone3D(nn.Module):
    """Stage 1 at full resolution, each later stage a stride-2 conv then a submanifold conv."""

    def __init__(self, widths: tuple[int, ...], in_channels: int = 5) -> None:
        super().__init__()
        layers, cin = [SparseBlock(in_channels, widths[0]), SparseBlock(widths[0], widths[0])], widths[0]
        for width in widths[1:]:
            layers += [SparseBlock(cin, width, stride=2), SparseBlock(width, width)]
            cin = width
        self.layers = nn.ModuleList(layers)

    def forward(self, x: SparseTensor) -> SparseTensor:
        for layer in self.layers:
            x = layer(x)
        return x


def to_bev(x: SparseTensor) -> SparseTensor:
    """Height folded into channels: one 2D site per occupied (batch, y, x) column, features [C * D]."""
    depth = x.spatial_shape[0]
    _, ny, nx = x.spatial_shape
    column = (x.indices[:, 0] * ny + x.indices[:, 2]) * nx + x.indices[:, 3]
    unique, inverse = torch.unique(column, return_inverse=True)
    channels = x.features.shape[1]
    stacked = x.features.new_zeros(len(unique), depth, channels)
    stacked = stacked.index_put((inverse, x.indices[:, 1].long()), x.features, accumulate=True)
    sites = torch.stack([unique // (ny * nx), unique // nx % ny, unique % nx], dim=1)
    return SparseTensor(stacked.reshape(len(unique), depth * channels), sites, (ny, nx), x.batch_size)


def conv_stage(cin: int, cout: int, count: int, stride: int = 1, norm: str = "batch") -> nn.Sequential:
    """``count`` 3x3 convs (the first with ``stride``), each without bias and followed by a norm + ReLU: BatchNorm,
    or a sparsity-preserving one (no mean, no bias: an empty cell stays zero)."""
    layers = []
    for i in range(count):
        layers += [nn.Conv2d(cin if i == 0 else cout, cout, 3, stride if i == 0 else 1, 1, bias=False),
                   NORMS_2D[norm](cout, eps=1e-3, momentum=0.01), nn.ReLU()]
    return nn.Sequential(*layers)


class Backbone2D(nn.Module):
    """Stages of stride-1 3x3 convs on the BEV grid. No stride, so that a sparse run (Ada3D) maps each cell to
    itself; filtering can be re-applied between stages to hold the map's density down."""

    def __init__(self, cin: int, width: int, layers_per_stage: tuple[int, ...], norm: str = "batch") -> None:
        super().__init__()
        self.stages = nn.ModuleList(conv_stage(cin if i == 0 else width, width, count, 1, norm)
                                    for i, count in enumerate(layers_per_stage))
        self.out_channels = width

    def forward(self, bev: torch.Tensor) -> torch.Tensor:
        for stage in self.stages:
            bev = stage(bev)
        return bev


class CenterHead(nn.Module):
    """Per BEV cell: a heatmap logit per class and 8 regression channels (dx, dy, z, log l, w, h, sin 2yaw,
    cos 2yaw)."""

    def __init__(self, cin: int, width: int, classes: int, norm: str = "batch") -> None:
        super().__init__()
        self.shared = conv_stage(cin, width, 1, 1, norm)
        self.heatmap = nn.Sequential(conv_stage(width, width, 1, 1, norm), nn.Conv2d(width, classes, 1))
        self.regression = nn.Sequential(conv_stage(width, width, 1, 1, norm), nn.Conv2d(width, 8, 1))
        nn.init.constant_(self.heatmap[-1].bias, -2.19)  # CenterNet's prior: sigmoid = 0.1

    def forward(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        shared = self.shared(features)
        return {"heatmap": self.heatmap(shared), "regression": self.regression(shared)}


class CenterPoint(nn.Module):
    """The detector: ``forward(points)`` -> dense heatmap logits [B, classes, H, W] and regression [B, 8, H, W]."""

    def __init__(self, config: CenterPointConfig) -> None:
        super().__init__()
        self.config = config
        self.backbone_3d = Backbone3D(config.widths_3d)
        self.backbone_2d = Backbone2D(config.widths_3d[-1] * config.bev_depth, config.width_2d, config.layers_2d,
                                      config.norm_2d)
        self.head = CenterHead(self.backbone_2d.out_channels, config.head_width, len(config.classes), config.norm_2d)

    def bev_input(self, points: list[torch.Tensor]) -> SparseTensor:
        """The sparse BEV map the 2D backbone reads (Ada3D filters here and at the voxels)."""
        return to_bev(self.backbone_3d(voxelize(points, self.config)))

    def forward(self, points: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        bev = self.bev_input(points).dense()
        return self.head(self.backbone_2d(bev))


def build_detector(config: CenterPointConfig) -> CenterPoint:
    return CenterPoint(config)
