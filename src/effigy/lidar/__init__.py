"""Ada3D (https://arxiv.org/abs/2307.08209): input filtering by predicted importance, sparsity-preserving
batch normalisation, and the sparse run of a lidar detector's 2D part."""
