import torch

from effigy.lidar.ada3d import Ada3D
from effigy.lidar.training import Ada3DTrainConfig, fine_tune, train_predictor
from effigy.models.lidar.centerpoint import CenterPoint
from effigy.nn.sparse_norm import SparsityPreservingBatchNorm
from effigy.worlds.lidar import simulate_frame
from tests.lidar import TINY

STEPS = Ada3DTrainConfig(predictor_steps=2, finetune_steps=2, batch_size=1)


def test_the_predictor_learns_and_fine_tuning_returns_a_sparse_ada3d_model():
    frames = [simulate_frame(s) for s in (0, 1)]
    detector = CenterPoint(TINY)
    losses = []
    predictor = train_predictor(detector, frames, STEPS, lambda step, loss: losses.append(loss))
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
    model = fine_tune(detector, predictor, frames, STEPS)
    assert isinstance(model, Ada3D) and model.config.sparse_2d and not model.training
    norms = [m for m in model.detector.backbone_2d.modules() if isinstance(m, SparsityPreservingBatchNorm)]
    assert len(norms) == sum(TINY.layers_2d)
    with torch.no_grad():
        out = model([torch.from_numpy(frames[0].points)])
    assert out["heatmap"].shape == (1, 3, *TINY.bev_shape)
