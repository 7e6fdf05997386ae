import pytest
import torch


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)


@pytest.fixture
def tiny_dit():
    """A tiny random class-conditional diffusers DiT: fast, and shaped like the real thing."""
    from diffusers import DiTTransformer2DModel

    return DiTTransformer2DModel(
        num_attention_heads=2, attention_head_dim=16, in_channels=1, out_channels=1, num_layers=2,
        sample_size=8, patch_size=2, num_embeds_ada_norm=10, norm_num_groups=1,
    ).eval()


@pytest.fixture
def tiny_pixart():
    """A tiny random diffusers PixArt transformer (self- and cross-attention, adaLN-single)."""
    from diffusers import PixArtTransformer2DModel

    return PixArtTransformer2DModel(
        num_attention_heads=2, attention_head_dim=8, in_channels=3, out_channels=3, num_layers=2,
        cross_attention_dim=16, sample_size=8, patch_size=2, caption_channels=12, norm_num_groups=1,
        use_additional_conditions=False,
    ).eval()


@pytest.fixture
def quick_synthetic(monkeypatch):
    """A stand-in pool of generated face crops (mirrored real crops), so that rendering the synthetic family need
    not sample the face DiT (the shipped generator has a test of its own in tests/models/test_zoo.py)."""
    import numpy as np

    from effigy.worlds import deepfakes
    from effigy.worlds.faces import real_faces

    pool = lambda seed, count=deepfakes.SYNTHETIC_POOL: np.ascontiguousarray(  # noqa: E731
        real_faces()[np.arange(count) % 100, :, ::-1])
    monkeypatch.setattr(deepfakes, "synthetic_crops", pool)


@pytest.fixture
def fake_gs(tmp_path, monkeypatch):
    """A stand-in ``gs`` first on PATH that only records that it ran (Pillow's EPS plugin runs Ghostscript);
    yields the file it writes. Pillow's cached look-up of gs is reset so that the stand-in is the one found."""
    import os
    import stat

    from PIL import EpsImagePlugin

    folder, marker = tmp_path / "fake-bin", tmp_path / "gs-ran"
    folder.mkdir()
    script = folder / "gs"
    script.write_text(f"#!/bin/sh\necho \"$@\" >> {marker}\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(EpsImagePlugin, "gs_binary", None)
    yield marker
