"""What a user verb runs on the user's own model or data: quantize (model resolution, calibration, the
mixed-precision search, save), mixed_precision (ViDiT-Q's and MixDQ's searches on any denoiser), accelerate
(DiTFastAttn and LiteVAR plans), kvquant (PM-KVQ calibration text and generation). No bench types: benches
compare what these produce."""
