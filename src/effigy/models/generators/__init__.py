"""The generators effigy trains and ships: the digits DiT, the shapes text-to-image PixArt, and their shared
diffusion training and sampling."""
