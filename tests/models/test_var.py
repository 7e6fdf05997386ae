"""The VAR pieces on tiny configs: residual VQ round trip and scale schedule, block-causal attention,
KV-cached generation against uncached, EMA codebook restarts, resumable training."""
import pytest
import torch

from effigy.errors import CheckpointError, ModelError
from effigy.models.var import tokenizer as vq
from effigy.models.var import transformer as var

SCALES = (1, 2, 3, 4, 6, 8)


def tiny_tokenizer(**overrides) -> vq.MultiScaleVQVAE:
    torch.manual_seed(0)
    config = vq.VQVAEConfig(**{"channels": 16, "latent_dim": 8, "codebook_size": 32, **overrides})
    return vq.MultiScaleVQVAE(config).eval()


def tiny_var(**overrides) -> var.VARTransformer:
    torch.manual_seed(0)
    config = var.VARConfig(**{"num_layers": 2, "num_attention_heads": 2, "attention_head_dim": 8, "latent_dim": 8,
                              "codebook_size": 32, **overrides})
    model = var.VARTransformer(config).eval()
    with torch.no_grad():  # leave the zero-initialised gates: every block then does something
        for p in model.parameters():
            p.normal_(0, 0.2)
    return model


def digits_like(n: int = 4) -> torch.Tensor:
    return torch.rand(n, 1, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1


def test_scale_schedule_gives_one_index_map_per_scale():
    tokenizer = tiny_tokenizer()
    indices = tokenizer.encode(digits_like())
    assert [i.shape for i in indices] == [torch.Size([4, s * s]) for s in SCALES]
    assert tokenizer.config.tokens == 130
    assert var.scale_of_tokens(SCALES).bincount().tolist() == [s * s for s in SCALES]


def test_decoding_the_indices_rebuilds_the_quantizers_reconstruction():
    tokenizer = tiny_tokenizer()
    with torch.no_grad():
        f = tokenizer.encoder(digits_like())
        indices, f_hat, _ = tokenizer.quantize(f)
        torch.testing.assert_close(tokenizer.indices_to_latent(indices), f_hat)
        # each scale explains part of the residual: the error never grows as scales are added
        errors = [(f - sum(tokenizer.code_map(k, i) for k, i in enumerate(indices[: j + 1]))).pow(2).mean()
                  for j in range(len(indices))]
    assert errors[-1] < errors[0]


def test_teacher_forcing_inputs_are_the_generation_loops_inputs():
    tokenizer = tiny_tokenizer()
    with torch.no_grad():
        indices = tokenizer.encode(digits_like())
        inputs = tokenizer.teacher_forcing_inputs(indices)
        f_hat, pieces = torch.zeros(4, 8, 8, 8), []
        for k, idx in enumerate(indices):
            f_hat, nxt = tokenizer.next_scale_input(k, f_hat, idx)
            if nxt is not None:
                pieces.append(nxt)
    assert inputs.shape == (4, 129, 8)
    torch.testing.assert_close(inputs, torch.cat(pieces, 1))
    assert nxt is None


def test_block_causal_mask_lets_a_token_see_its_own_and_coarser_scales_only():
    mask = var.block_causal_mask(SCALES)
    level = var.scale_of_tokens(SCALES)
    for q in (0, 1, 4, 5, 30, 129):
        for k in (0, 3, 4, 13, 66, 129):
            assert (mask[q, k] == 0) == (level[k] <= level[q]), (q, k)
    assert torch.isneginf(mask).any()


def test_changing_a_finer_scales_input_leaves_coarser_logits_unchanged():
    model, tokenizer = tiny_var(), tiny_tokenizer()
    with torch.no_grad():
        inputs = tokenizer.teacher_forcing_inputs(tokenizer.encode(digits_like()))
        labels = torch.tensor([0, 1, 2, 3])
        logits = model(labels, inputs)
        changed = inputs.clone()
        start, _ = model.scale_span(4)
        changed[:, start - 1:] += 1.0  # scale 4 onwards (inputs lack the start token)
        other = model(labels, changed)
    torch.testing.assert_close(logits[:, :start], other[:, :start])
    assert not torch.allclose(logits[:, start:], other[:, start:])


def test_kv_cached_logits_equal_the_full_sequence_logits():
    model, tokenizer = tiny_var(), tiny_tokenizer()
    with torch.no_grad():
        inputs = tokenizer.teacher_forcing_inputs(tokenizer.encode(digits_like()))
        labels = torch.tensor([0, 1, 2, 10])
        full = model(labels, inputs)
        cache, pieces = var.ScaleKVCache(2), []
        for k in range(len(SCALES)):
            start, end = model.scale_span(k)
            step_inputs = None if k == 0 else inputs[:, start - 1: end - 1]
            pieces.append(model.scale_logits(labels, step_inputs, k, cache))
    torch.testing.assert_close(torch.cat(pieces, 1), full, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("guidance, top_k, top_p", [(3.0, 0, 1.0), (0.0, 5, 0.9)])
def test_kv_cached_generation_equals_uncached_generation(guidance, top_k, top_p):
    model, tokenizer = tiny_var(), tiny_tokenizer()
    labels = torch.tensor([0, 3, 7])
    cached = model.generate(tokenizer, labels, guidance, top_k, top_p, seed=5)
    uncached = model.generate(tokenizer, labels, guidance, top_k, top_p, seed=5, use_cache=False)
    assert cached.shape == (3, 1, 16, 16)
    torch.testing.assert_close(cached, uncached)
    assert not torch.equal(cached, model.generate(tokenizer, labels, guidance, top_k, top_p, seed=6))


def test_top_k_and_top_p_keep_only_the_likely_codes():
    logits = torch.tensor([[[4.0, 3.0, 0.0, -1.0]]]).expand(1, 500, 4).contiguous()
    generator = torch.Generator().manual_seed(0)
    assert set(var.sample_codes(logits, 2, 1.0, generator).unique().tolist()) == {0, 1}
    assert set(var.sample_codes(logits, 0, 0.5, generator).unique().tolist()) == {0}
    assert len(var.sample_codes(logits, 0, 1.0, generator).unique()) >= 3


def test_a_mismatched_tokenizer_and_bad_inputs_are_refused():
    model = tiny_var()
    with pytest.raises(ModelError, match="load the tokenizer it was trained with"):
        model.generate(tiny_tokenizer(codebook_size=64), torch.tensor([0]))
    with pytest.raises(ModelError, match=r"\[B, 129, 8\]"):
        model(torch.tensor([0]), torch.zeros(1, 100, 8))
    with pytest.raises(ModelError, match="images"):
        tiny_tokenizer().encode(torch.zeros(1, 3, 16, 16))
    with pytest.raises(ModelError, match="tokens per scale"):
        tiny_tokenizer().decode_indices([torch.zeros(1, 1, dtype=torch.long)])
    with pytest.raises(ModelError, match="rise strictly"):
        vq.VQVAEConfig(scales=(2, 4, 8))


def test_unused_codes_are_restarted_on_batch_residuals():
    tokenizer = tiny_tokenizer(dead_code_usage=0.6, ema_decay=0.5)  # unused: 1 -> 0.5
    images = digits_like(8)
    _, _, indices, pooled = tokenizer(images)
    used = torch.cat([i.flatten() for i in indices]).unique()
    dead = torch.tensor([c for c in range(32) if c not in used.tolist()])
    assert len(dead) > 0
    tokenizer.update_codebook(pooled, indices, torch.Generator().manual_seed(0))
    vectors = torch.cat(pooled).detach()
    for code in dead.tolist():  # each restarted code now sits exactly on one of the batch's residuals
        assert (tokenizer.codebook[code] - vectors).abs().sum(1).min() == 0


def tiny_tokenizer_config(**overrides) -> vq.VQVAEConfig:
    return vq.VQVAEConfig(channels=8, latent_dim=4, codebook_size=16, train_steps=4, batch_size=4,
                          checkpoint_every=2, **overrides)


def _interrupt_at(stop: int):
    def progress(step, _loss):
        if step == stop:
            raise KeyboardInterrupt
    return progress


@pytest.mark.parametrize("which", ["tokenizer", "transformer"])
def test_an_interrupted_run_resumes_to_the_same_weights(tmp_path, which):
    if which == "tokenizer":
        config, train = tiny_tokenizer_config(), vq.train
        other = tiny_tokenizer_config(learning_rate=1e-3)
    else:
        tokenizer = vq.MultiScaleVQVAE(tiny_tokenizer_config()).eval()
        arch = dict(num_layers=1, num_attention_heads=1, attention_head_dim=8, latent_dim=4, codebook_size=16,
                    train_steps=4, batch_size=4, checkpoint_every=2)
        config = var.VARConfig(**arch)
        other = var.VARConfig(**{**arch, "learning_rate": 1e-4})

        def train(c, progress=None, checkpoint_dir=None):
            return var.train(c, progress, checkpoint_dir, tokenizer=tokenizer)
    straight = train(config)
    with pytest.raises(KeyboardInterrupt):
        train(config, _interrupt_at(2), checkpoint_dir=tmp_path)
    steps_run = []
    resumed = train(config, lambda s, _l: steps_run.append(s), checkpoint_dir=tmp_path)
    assert steps_run == [2, 3]
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    with pytest.raises(CheckpointError, match="another config"):
        train(other, checkpoint_dir=tmp_path)
