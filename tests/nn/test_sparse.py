import pytest
import torch
import torch.nn.functional as F

from effigy.errors import SparseError
from effigy.nn.sparse import (
    SparseConv,
    SparseInverseConv,
    SparseTensor,
    SubMConv,
    build_rulebook,
    dense_weight,
    select_sites,
    sparse_conv,
)

CONV = {2: F.conv2d, 3: F.conv3d}


def random_sparse(dims: int, channels: int = 3, shape=(9, 8, 7), density: float = 0.2, seed: int = 0) -> SparseTensor:
    g = torch.Generator().manual_seed(seed)
    dense = torch.randn(2, channels, *shape[:dims], generator=g)
    dense = dense * (torch.rand(2, 1, *shape[:dims], generator=g) < density)
    return SparseTensor.from_dense(dense)


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("stride", [1, 2])
def test_regular_sparse_convolution_equals_a_dense_convolution_of_the_zero_filled_map(dims, stride):
    x = random_sparse(dims)
    layer = SparseConv(3, 4, 3, dims, stride=stride)
    out = layer(x)
    expected = CONV[dims](x.dense(), dense_weight(layer), stride=stride, padding=1)
    torch.testing.assert_close(out.dense(), expected, rtol=1e-5, atol=1e-5)
    assert out.dense().ne(0).any(dim=1).sum() <= len(out.indices)  # zeros off the reached sites


@pytest.mark.parametrize("dims", [2, 3])
def test_submanifold_convolution_equals_dense_on_the_input_sites_and_keeps_them(dims):
    x = random_sparse(dims)
    layer = SubMConv(3, 4, 3, dims)
    out = layer(x)
    assert torch.equal(out.indices, x.indices)
    dense = CONV[dims](x.dense(), dense_weight(layer), padding=1)
    torch.testing.assert_close(out.features, dense.movedim(1, -1)[tuple(x.indices.T)], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("submanifold,stride", [(True, 1), (False, 1), (False, 2)])
def test_a_large_grid_finds_sites_from_the_sites_alone_and_gets_the_same_rulebook(monkeypatch, submanifold, stride):
    x = random_sparse(3, density=0.1)
    table = build_rulebook(x, 3, stride, 1, submanifold)
    monkeypatch.setattr("effigy.nn.sparse.TABLE_PER_QUERY", 0)  # every grid counts as large
    monkeypatch.setattr("effigy.nn.sparse.POOL_PER_SITE", 0)
    searched = build_rulebook(x, 3, stride, 1, submanifold)
    assert torch.equal(table.neighbours, searched.neighbours) and torch.equal(table.out_indices, searched.out_indices)
    assert (table.neighbours >= 0).any() and (table.neighbours < 0).any()


def test_an_inverse_layer_is_the_transposed_strided_convolution_on_the_original_sites():
    x = random_sparse(2)
    down = SparseConv(3, 4, 3, 2, stride=2)
    up = SparseInverseConv(4, 3, 3, 2)
    coarse = down(x)
    out = up(coarse)
    assert torch.equal(out.indices, x.indices)
    full = F.conv_transpose2d(coarse.dense(), dense_weight(up).transpose(0, 1), stride=2, padding=1,
                              output_padding=1)[..., : x.spatial_shape[0], : x.spatial_shape[1]]
    torch.testing.assert_close(out.features, full.movedim(1, -1)[tuple(x.indices.T)], rtol=1e-5, atol=1e-5)


def test_gradients_flow_to_features_and_weights():
    x = random_sparse(3)
    x.features.requires_grad_(True)
    layer = SubMConv(3, 2, 3, 3)
    layer(x).features.square().sum().backward()
    assert x.features.grad.abs().sum() > 0 and layer.weight.grad.abs().sum() > 0


def test_layers_refuse_tensors_that_do_not_fit():
    x = random_sparse(2)
    with pytest.raises(SparseError, match="channels"):
        SubMConv(5, 2, 3, 2)(x)
    with pytest.raises(SparseError, match="3-D sparse layer"):
        SubMConv(3, 2, 3, 3)(x)
    with pytest.raises(SparseError, match="SparseConv"):
        SparseInverseConv(3, 2, 3, 2)(x)
    with pytest.raises(SparseError, match="1 \\+ D"):
        SparseTensor(torch.zeros(2, 3), torch.zeros(2, 2, dtype=torch.long), (4, 4), 1)


def test_a_dense_layers_weight_runs_sparse_and_matches_the_dense_layer():
    x = random_sparse(2, channels=3)
    conv = torch.nn.Conv2d(3, 5, 3, padding=1, bias=False)
    out = sparse_conv(x, conv.weight)
    torch.testing.assert_close(out.dense(), conv(x.dense()), rtol=1e-5, atol=1e-5)
    subm = sparse_conv(x, conv.weight, submanifold=True)
    assert torch.equal(subm.indices, x.indices)


def test_selecting_sites_removes_the_rest():
    x = random_sparse(2)
    keep = torch.arange(len(x.indices)) % 3 == 0
    kept = select_sites(x, keep)
    assert len(kept.indices) == int(keep.sum()) and torch.equal(kept.features, x.features[keep])
    assert kept.dense().ne(0).any(dim=1).sum() == len(kept.indices)
