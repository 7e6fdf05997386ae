"""Deepfake detection in the AuthGuard style (arXiv 2506.04501): an expert vision encoder trained with
classification and uncertainty-aware image-text contrastive learning."""
