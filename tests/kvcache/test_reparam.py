import copy

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from effigy.kvcache.reparam import attention_error, capture_qkv, fold_key_scales, pair_shared_maxima, search_key_scales


def _llama_with_outlier_keys():
    config = LlamaConfig(vocab_size=97, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024)
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():  # a few key channels with large magnitude, as in trained LLMs
        for layer in model.model.layers:
            layer.self_attn.k_proj.weight[[3, 21]] *= 12
    return model


@torch.no_grad()
def test_folding_keeps_the_model_and_shrinks_key_outliers():
    model = _llama_with_outlier_keys()
    ids = torch.randint(0, 97, (1, 40), generator=torch.Generator().manual_seed(0))
    scales, alphas = search_key_scales(model, [ids], bits=2, group_size=16)
    assert len(scales) == 2 and all(a in (0.0, 0.25, 0.5, 0.75, 1.0) for a in alphas)
    assert any(a > 0 for a in alphas)  # outlier channels make scaling worth it
    before = capture_qkv(model, ids)[0][1]
    folded = fold_key_scales(copy.deepcopy(model), scales)
    torch.testing.assert_close(folded(ids).logits, model(ids).logits, atol=1e-4, rtol=1e-4)
    after = capture_qkv(folded, ids)[0][1]
    spread = lambda k: (pair_shared_maxima(k).max() / pair_shared_maxima(k).median()).item()
    assert spread(after) < spread(before)
    held_out = torch.randint(0, 97, (1, 40), generator=torch.Generator().manual_seed(1))
    ones = torch.ones(2, 16)
    err = lambda m: sum(attention_error(*layer, ones, 2, 16) for layer in capture_qkv(m, held_out))
    assert err(folded) < err(model)  # 2-bit keys disturb attention less after reparameterization


def test_pair_sharing_matches_rope_pairs():
    keys = torch.zeros(1, 1, 3, 8)
    keys[..., 1] = 5.0
    m = pair_shared_maxima(keys)
    assert m[0, 1] == m[0, 5] == 5.0 and m[0, 0] == m[0, 4]


@torch.no_grad()
def test_qwen2_with_biased_projections_keeps_its_outputs_and_generates_with_the_cache():
    from transformers import Qwen2Config, Qwen2ForCausalLM

    import effigy

    config = Qwen2Config(vocab_size=97, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)
    model = Qwen2ForCausalLM(config).eval()
    assert model.model.layers[0].self_attn.k_proj.bias is not None
    ids = torch.randint(0, 97, (1, 24), generator=torch.Generator().manual_seed(0))
    scales, _ = search_key_scales(model, [ids], bits=2, group_size=16)
    folded = fold_key_scales(copy.deepcopy(model), scales)
    torch.testing.assert_close(folded(ids).logits, model(ids).logits, atol=1e-4, rtol=1e-4)
    folded.generation_config.eos_token_id = None
    cache = effigy.PMKVQCache(folded, budget_mb=0.006, window=4, chunk=4, group_size=16)
    out = folded.generate(ids, max_new_tokens=20, min_new_tokens=20, do_sample=False, past_key_values=cache, pad_token_id=0)
    assert out.shape[1] == 44 and max(cache.widths()) < 16
