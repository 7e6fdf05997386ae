"""Deepfake detection in the AuthGuard style (arXiv 2506.04501): an expert vision encoder trained with
classification and uncertainty-aware image-text contrastive learning. Importing it registers the deepfake
models in the zoo."""
from effigy.detect.deepfake import zoo as _zoo  # noqa: F401  (registers the deepfake models)
