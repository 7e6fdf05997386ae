import pytest
import torch

from effigy.errors import PlanError
from effigy.lidar.ada3d import (
    Ada3D,
    Ada3DConfig,
    bev_cells,
    distance_scores,
    input_raster,
    keep_counts,
    random_scores,
    sparsity_preserving,
    top_cells,
)
from effigy.models.lidar.centerpoint import CenterPoint, voxelize
from effigy.nn.sparse_norm import SparsityPreservingBatchNorm
from effigy.worlds.lidar import simulate_frame
from tests.lidar import TINY, as_if_trained


@pytest.fixture(scope="module")
def points() -> list[torch.Tensor]:
    return [torch.from_numpy(simulate_frame(s).points) for s in (0, 1)]


def sp_detector() -> CenterPoint:
    torch.manual_seed(0)
    detector = sparsity_preserving(CenterPoint(TINY))
    for module in detector.modules():  # give the norms non-trivial statistics
        if isinstance(module, SparsityPreservingBatchNorm):
            module.running_var.uniform_(0.5, 2.0)
    return detector.eval()


def test_top_cells_keeps_each_frames_highest_scores():
    scores = torch.tensor([[[0.1, 0.9], [0.5, 0.2]], [[0.3, 0.4], [0.8, 0.7]]])
    sites = torch.tensor([[0, 0, 0], [0, 0, 1], [0, 1, 0], [1, 0, 0], [1, 1, 0], [1, 1, 1]])
    counts = keep_counts(sites, 0.5, 2)
    assert counts.tolist() == [2, 2]
    assert top_cells(scores, sites, counts).tolist() == [False, True, True, False, True, True]


def test_top_cells_matches_a_per_frame_top_k_on_random_scores():
    generator = torch.Generator().manual_seed(0)
    scores = torch.rand(3, 8, 8, generator=generator)
    occupied = torch.rand(3, 8, 8, generator=generator) < 0.4
    sites = occupied.nonzero()[torch.randperm(int(occupied.sum()), generator=generator)]
    counts = keep_counts(sites, 0.3, 3)
    chosen = top_cells(scores, sites, counts)
    for frame in range(3):
        rows = (sites[:, 0] == frame).nonzero().squeeze(1)
        values = scores[frame][sites[rows, 1], sites[rows, 2]]
        expected = set(rows[values.topk(int(counts[frame])).indices].tolist())
        assert set(rows[chosen[rows]].tolist()) == expected


def test_bev_cells_gives_every_voxel_its_column_cell(points):
    voxels = voxelize(points, TINY)
    cells = bev_cells(voxels, TINY.bev_stride)
    stride = TINY.bev_stride
    expected = torch.stack([voxels.indices[:, 0], voxels.indices[:, 2] // stride, voxels.indices[:, 3] // stride], 1)
    assert torch.equal(cells.sites[cells.of_voxel], expected)
    assert len(cells.sites) == len(torch.unique(expected, dim=0))


def test_filtering_removes_exactly_the_voxels_of_the_dropped_cells(points):
    model = Ada3D(sp_detector(), Ada3DConfig(keep_3d=0.5, keep_2d=1.0))
    voxels = voxelize(points, TINY)
    scores = torch.sigmoid(model.importance_logits(voxels))[:, 0]
    kept = model._filter_voxels(voxels, scores, bev_cells(voxels, TINY.bev_stride), model.tally)
    stride = TINY.bev_stride
    cells = lambda v: {(int(b), int(y) // stride, int(x) // stride) for b, _, y, x in v.indices}  # noqa: E731
    all_cells, kept_cells = cells(voxels), cells(kept)
    assert len(kept_cells) == sum(keep_counts(torch.tensor(sorted(all_cells)), 0.5, 2).tolist())
    inside = [(int(b), int(y) // stride, int(x) // stride) in kept_cells for b, _, y, x in voxels.indices]
    assert len(kept.indices) == sum(inside) < len(voxels.indices)
    scores = scores.detach()
    for frame in (0, 1):
        lowest_kept = min(float(scores[c]) for c in kept_cells if c[0] == frame)
        assert all(float(scores[c]) <= lowest_kept for c in all_cells - kept_cells if c[0] == frame)


@pytest.mark.parametrize("refilter", [True, False])
def test_the_sparse_run_equals_the_masked_dense_run(points, refilter):
    detector = sp_detector()
    predictor = Ada3D(detector).predictor
    with torch.no_grad():
        sparse = Ada3D(detector, Ada3DConfig(0.6, 0.3, sparse_2d=True, refilter_2d=refilter), predictor)
        dense = Ada3D(detector, Ada3DConfig(0.6, 0.3, sparse_2d=False, refilter_2d=refilter), predictor)
        a, b = sparse(points), dense(points)
    torch.testing.assert_close(a["heatmap"], b["heatmap"], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(a["regression"], b["regression"], rtol=1e-4, atol=1e-4)
    assert sparse.tally.density_after_stage == pytest.approx(dense.tally.density_after_stage)
    assert sparse.tally.macs_2d < dense.tally.macs_2d and sparse.tally.voxels_kept < sparse.tally.voxels_in


def test_without_refiltering_the_stages_grow_the_map_from_the_kept_input(points):
    detector = sp_detector()
    predictor = Ada3D(detector).predictor
    runs = {}
    with torch.no_grad():
        for refilter in (True, False):
            model = Ada3D(detector, Ada3DConfig(0.6, 0.3, refilter_2d=refilter), predictor)
            model(points)
            runs[refilter] = model.tally
    assert runs[True].density_after_stage[0] == runs[False].density_after_stage[0]  # the same input kept
    assert runs[False].density_after_stage[1] > runs[True].density_after_stage[1]
    assert runs[False].macs_2d > runs[True].macs_2d


@pytest.mark.parametrize("config", [Ada3DConfig(1.0, 1.0, sparse_2d=False), Ada3DConfig(0.6, 0.3, sparse_2d=False),
                                    Ada3DConfig(0.6, 0.3, sparse_2d=True)])
def test_counted_multiply_adds_are_per_frame_whatever_the_batch(points, config):
    """A batch of two copies of a frame computes twice what the frame alone does, dense or sparse."""
    model = Ada3D(sp_detector(), config)
    with torch.no_grad():
        model(points[:1])
        one = model.tally
        model([points[0], points[0]])
        two = model.tally
    assert (two.macs_3d, two.macs_2d) == (2 * one.macs_3d, 2 * one.macs_2d)


def test_with_plain_batchnorms_the_map_fills_up(points):
    model = Ada3D(as_if_trained(CenterPoint(TINY).eval()), Ada3DConfig(0.6, 0.3, sparse_2d=False))
    with torch.no_grad():
        model(points)
    assert min(model.tally.density_after_stage) > 0.9


def test_the_predictor_reads_one_raster_cell_per_occupied_bev_cell(points):
    voxels = voxelize(points, TINY)
    raster = input_raster(voxels, TINY.bev_stride)
    assert raster.spatial_shape == TINY.bev_shape and raster.features.shape[1] == voxels.features.shape[1] + 1


def test_kept_shares_outside_zero_to_one_are_refused():
    with pytest.raises(PlanError, match="keep_2d"):
        Ada3DConfig(keep_2d=0.0)


def test_keeping_everything_is_the_dense_detector(points):
    torch.manual_seed(0)
    detector = CenterPoint(TINY).eval()
    with torch.no_grad():
        expected = detector(points)
        model = Ada3D(detector, Ada3DConfig(1.0, 1.0, sparse_2d=False))
        out = model(points)
    torch.testing.assert_close(out["heatmap"], expected["heatmap"])
    assert model.tally.voxels_kept == model.tally.voxels_in


def test_the_baselines_score_at_random_or_by_distance(points):
    voxels = voxelize(points, TINY)
    near_first = distance_scores(voxels, TINY)
    assert near_first[0, TINY.bev_shape[0] // 2, 0] > near_first[0, 0, -1]
    a, b = random_scores(1)(voxels, TINY), random_scores(1)(voxels, TINY)
    assert torch.equal(a, b) and a.shape == (2, *TINY.bev_shape)
