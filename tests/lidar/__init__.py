"""Shared by the lidar tests: a tiny detector geometry (a 12.8 x 12.8 m area, narrow layers)."""
import torch

from effigy.models.lidar.centerpoint import CenterPointConfig

TINY = CenterPointConfig(point_range=(0.0, -6.4, -3.0, 12.8, 6.4, 1.0), widths_3d=(4, 8), width_2d=8, layers_2d=(1, 1),
                         head_width=8, train_steps=3, batch_size=1, checkpoint_every=1)


def as_if_trained(model: torch.nn.Module) -> torch.nn.Module:
    """Give every BatchNorm2d a trained-looking mean and bias (fresh ones map zero to zero)."""
    torch.manual_seed(0)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.bias.data.uniform_(-1, 1)
    return model
