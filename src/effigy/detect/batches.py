"""Running a face model over many captures: one shape check, fixed-size batches, no gradients."""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from effigy.errors import ModelError
from effigy.worlds.faces import SIZE


@torch.no_grad()
def map_face_batches(fn: Callable[[torch.Tensor], torch.Tensor], images: np.ndarray, batch_size: int) -> torch.Tensor:
    """``fn`` applied to images [N, 3, SIZE, SIZE] in [0, 1], ``batch_size`` at a time, results concatenated.

    Raises:
        ModelError: the images are not [N, 3, SIZE, SIZE].
    """
    if images.ndim != 4 or images.shape[1:] != (3, SIZE, SIZE):
        raise ModelError(f"face images must be [N, 3, {SIZE}, {SIZE}] in [0, 1], got {tuple(images.shape)}.")
    tensor = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    return torch.cat([fn(tensor[i: i + batch_size]) for i in range(0, len(tensor), batch_size)])
