import torch
from torch import nn

from effigy.lidar.norm import SparsityPreservingBatchNorm


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
