import torch
from torch import nn

from effigy.nn.sparse_norm import SparsityPreservingBatchNorm


def sparse_map(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, 4, 8, 8, generator=g) * (torch.rand(2, 1, 8, 8, generator=g) < 0.3)


def test_zeros_stay_zero_in_training_and_in_eval():
    x = sparse_map()
    norm = SparsityPreservingBatchNorm(4)
    for mode in (True, False):
        norm.train(mode)
        y = norm(x)
        assert torch.equal(y.eq(0), x.eq(0))


def test_a_plain_batchnorm_fills_the_empty_cells():
    x = sparse_map()
    y = nn.BatchNorm2d(4).train()(x)
    assert y.ne(0).float().mean() > 0.9 > x.ne(0).float().mean()


def test_active_values_are_scaled_by_their_own_spread():
    x = sparse_map()
    norm = SparsityPreservingBatchNorm(4, eps=0.0).train()
    y = norm(x)
    active = x.movedim(1, -1).reshape(-1, 4)
    active = active[active.ne(0).any(dim=1)]
    out = y.movedim(1, -1).reshape(-1, 4)
    out = out[out.ne(0).any(dim=1)]
    torch.testing.assert_close(out, active / active.var(dim=0, unbiased=False).sqrt())


def test_sparse_rows_and_the_dense_map_normalise_alike():
    x = sparse_map()
    rows = x.movedim(1, -1)[x.ne(0).any(dim=1)]
    dense_norm, row_norm = SparsityPreservingBatchNorm(4).train(), SparsityPreservingBatchNorm(4).train()
    dense_out = dense_norm(x).movedim(1, -1)[x.ne(0).any(dim=1)]
    torch.testing.assert_close(row_norm(rows), dense_out)
    torch.testing.assert_close(row_norm.running_var, dense_norm.running_var)


def test_the_spbn_detector_keeps_empty_cells_at_zero_through_training_and_inference():
    """lidar-centerpoint-spbn's 2D part: a cell further from every occupied cell than its convs reach stays exactly
    zero, in training (after optimiser steps) and in eval; the plain detector fills it."""
    from dataclasses import replace

    from effigy.lidar.ada3d import _grow
    from effigy.models.lidar.centerpoint import CenterPoint, CenterPointConfig
    from effigy.models.lidar.train import train
    from effigy.models.zoo import zoo_entry
    from effigy.worlds.lidar import simulate_frame
    from tests.lidar import TINY, as_if_trained

    spbn = zoo_entry("lidar-centerpoint-spbn").config_cls()
    same = {k: v for k, v in spbn.to_dict().items() if k not in ("format", "norm_2d")}
    assert spbn.norm_2d == "sparsity-preserving"  # the shipped detector's geometry and training, its norms aside:
    assert same == {k: v for k, v in CenterPointConfig().to_dict().items() if k not in ("format", "norm_2d")}
    config = replace(TINY, norm_2d="sparsity-preserving")
    frames = [simulate_frame(seed) for seed in range(2)]
    model = train(config, frames=frames)  # three steps
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert sum(isinstance(m, SparsityPreservingBatchNorm) for m in model.modules()) == 5
    channels = model.backbone_2d.stages[0][0].in_channels
    bev = torch.zeros(1, channels, *config.bev_shape)
    bev[0, :, 4:7, 4:7] = torch.randn(channels, 3, 3)
    reach = _grow(bev.ne(0).any(dim=1), sum(isinstance(m, nn.Conv2d) for m in model.backbone_2d.modules()))
    for mode in (True, False):
        out = model.backbone_2d.train(mode)(bev)
        assert out[:, :, ~reach[0]].eq(0).all() and out[:, :, reach[0]].ne(0).any()
    plain = as_if_trained(CenterPoint(replace(TINY))).eval()
    assert plain.backbone_2d(bev)[:, :, ~reach[0]].ne(0).any()
