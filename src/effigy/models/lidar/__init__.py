"""The lidar detector Ada3D is measured on: a CenterPoint-style model on plain-PyTorch sparse convolution."""
