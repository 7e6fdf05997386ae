"""Tiny diffusers pipeline folders written by the tests: what a user brings to `effigy quantize` and
`effigy accelerate`."""
import pytest

WORDS = ["<pad>", "</s>", "<unk>", *"a red circle blue square on the left right of green triangle".split()]


def _vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",),
                         up_block_types=("UpDecoderBlock2D",), block_out_channels=(8,), latent_channels=4,
                         norm_num_groups=4, layers_per_block=1, sample_size=8)


def _scheduler():
    from diffusers import DPMSolverMultistepScheduler

    return DPMSolverMultistepScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2")


@pytest.fixture
def dit_pipeline_folder(tmp_path):
    """A tiny class-conditional DiTPipeline (ImageNet-style: 1000 labels, the null label 1000)."""
    from diffusers import DiTPipeline, DiTTransformer2DModel

    transformer = DiTTransformer2DModel(num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=4,
                                        num_layers=2, sample_size=8, patch_size=2, num_embeds_ada_norm=1000,
                                        norm_num_groups=1)
    DiTPipeline(transformer=transformer, vae=_vae(), scheduler=_scheduler(),
                id2label={i: f"class{i}" for i in range(1000)}).save_pretrained(tmp_path / "dit")
    return tmp_path / "dit"


@pytest.fixture
def pixart_pipeline_folder(tmp_path):
    """A tiny PixArt-alpha pipeline: T5 encoder and a tiny unigram tokenizer (no sentencepiece needed)."""
    from diffusers import PixArtAlphaPipeline, PixArtTransformer2DModel
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import T5Config, T5EncoderModel, T5TokenizerFast

    words = Tokenizer(models.Unigram([(w, 0.0) for w in WORDS], unk_id=2))
    words.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = T5TokenizerFast(tokenizer_object=words, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                                extra_ids=0)
    encoder = T5EncoderModel(T5Config(vocab_size=len(WORDS), d_model=16, d_kv=8, num_heads=2, num_layers=1, d_ff=32))
    transformer = PixArtTransformer2DModel(num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=4,
                                           num_layers=2, cross_attention_dim=16, sample_size=8, patch_size=2,
                                           caption_channels=16, norm_num_groups=1, use_additional_conditions=False)
    PixArtAlphaPipeline(tokenizer=tokenizer, text_encoder=encoder, vae=_vae(), transformer=transformer,
                        scheduler=_scheduler()).save_pretrained(tmp_path / "pixart")
    return tmp_path / "pixart"


