"""Ada3D (https://arxiv.org/abs/2307.08209): input filtering by predicted importance, sparsity-preserving
batch normalisation, and the sparse run of a lidar detector's 2D part. Importing it registers
``lidar-ada3d`` in the model zoo."""
from effigy.lidar import zoo as _zoo  # noqa: F401  (registers lidar-ada3d)
