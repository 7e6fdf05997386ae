import pytest
import torch
from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM

from effigy.errors import KVBudgetError
from effigy.kvcache.progressive import PMKVQCache, ProgressiveKVLayer, main_cache_bytes


def _feed(layer, tokens, step=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    k = torch.randn(1, 2, tokens, 32, generator=g)
    v = torch.randn(1, 2, tokens, 32, generator=g)
    for start in range(0, tokens, step):
        keys, values = layer.update(k[..., start:start + step, :], v[..., start:start + step, :])
    return k, v, keys, values


def test_sink_and_window_stay_fp16_and_main_is_quantized():
    layer = ProgressiveKVLayer(budget_bytes=10**9, start_bits=4, sink=2, window=8, chunk=4, group_size=32)
    k, v, keys, values = _feed(layer, 40)
    assert keys.shape == k.shape and layer.get_seq_length() == 40
    recent = layer.keys.shape[-2]
    assert 8 <= recent < 12 and layer.main_chunks * 4 == 40 - 2 - recent
    torch.testing.assert_close(keys[..., :2, :], k[..., :2, :], atol=1e-3, rtol=1e-3)  # sink
    torch.testing.assert_close(keys[..., -recent:, :], k[..., -recent:, :], atol=1e-3, rtol=1e-3)  # window
    main_error = (keys[..., 2:-recent, :] - k[..., 2:-recent, :]).abs().mean()
    assert 1e-3 < main_error < 0.3  # 4-bit main cache


def test_width_halves_when_the_budget_is_reached_and_stops_at_the_floor():
    per_chunk_16 = main_cache_bytes(16, 4, 1, 2, 32, 32)
    layer = ProgressiveKVLayer(budget_bytes=3 * per_chunk_16, min_bits=4, sink=1, window=8, chunk=4, group_size=32)
    _feed(layer, 1 + 8 + 4 * 3)  # three chunks flushed: exactly the budget at 16 bits
    assert layer.bits == 16
    _feed_more = lambda n: layer.update(torch.randn(1, 2, n, 32), torch.randn(1, 2, n, 32))
    _feed_more(4)  # a fourth chunk does not fit at 16 bits -> 8
    assert layer.bits == 8 and layer.width_history[-1] == (1 + 8 + 4 * 4, 8)
    assert layer.main_nbytes <= layer.budget_bytes
    with pytest.raises(KVBudgetError, match="lowest allowed width"):
        for _ in range(40):
            _feed_more(4)


def _tiny_llama():
    config = LlamaConfig(vocab_size=97, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)
    model = LlamaForCausalLM(config).eval()
    model.generation_config.eos_token_id = None  # a random model may emit its EOS id at once
    model.generation_config.pad_token_id = 0
    return model


@torch.no_grad()
def test_generate_with_the_cache_on_a_tiny_llama():
    model = _tiny_llama()
    prompt = torch.randint(0, 97, (1, 12), generator=torch.Generator().manual_seed(0))
    reference = model.generate(prompt, max_new_tokens=60, do_sample=False, past_key_values=DynamicCache(config=model.config))
    roomy = PMKVQCache(model, budget_mb=64, window=8, chunk=8, group_size=16)
    same = model.generate(prompt, max_new_tokens=60, do_sample=False, past_key_values=roomy)
    assert torch.equal(same, reference) and roomy.widths() == [16, 16]
    tight = PMKVQCache(model, budget_mb=0.004, window=8, chunk=8, group_size=16)
    out = model.generate(prompt, max_new_tokens=60, do_sample=False, past_key_values=tight)
    assert out.shape == reference.shape and max(tight.widths()) < 16
    assert tight.nbytes < roomy.nbytes


def test_allocation_sets_each_layers_floor_and_checks_the_total():
    model = _tiny_llama()
    cache = PMKVQCache(model, budget_mb=1, allocation=[4, 2], target_length=256, window=8, group_size=16)
    assert [layer.min_bits for layer in cache.layers] == [4, 2]
    assert cache.layers[0].budget_bytes > cache.layers[1].budget_bytes
    with pytest.raises(KVBudgetError, match="more than budget_mb"):
        PMKVQCache(model, budget_mb=0.001, allocation=[8, 8], target_length=4096, group_size=16)
    with pytest.raises(KVBudgetError, match="2 layers"):
        PMKVQCache(model, budget_mb=1, allocation=[4], target_length=256, group_size=16)


def test_baselines_hold_what_they_claim():
    from effigy.kvcache.baselines import fp16_cache, kivi_cache, rtn_cache, transformers_fp8_cache

    model = _tiny_llama()
    prompt = torch.randint(0, 97, (1, 40), generator=torch.Generator().manual_seed(3))
    caches = {"fp16": fp16_cache(model, 16), "rtn4": rtn_cache(model, 4, 16), "kivi2": kivi_cache(model, 2, 16, 16),
              "fp8": transformers_fp8_cache(model)}
    with torch.no_grad():
        reference = model(prompt).logits
        errors = {name: (model(prompt, past_key_values=c, use_cache=True).logits - reference).abs().mean().item()
                  for name, c in caches.items()}
    assert errors["fp16"] < 1e-3 < errors["rtn4"]
    assert errors["kivi2"] > 0
    elements = 2 * 2 * 40 * 16 * 2  # layers x (k, v) x tokens x head_dim x kv heads
    assert caches["fp16"].nbytes == 2 * elements
    assert caches["rtn4"].nbytes == elements // 2 + 2 * 2 * (elements // 16)
    assert caches["kivi2"].layers[0].keys.shape[-2] == 40 - 32  # two chunks of 16 flushed, 8 in fp16
    assert caches["fp8"].nbytes == elements + 4 * 4


@torch.no_grad()
def test_every_cache_holds_what_it_counts_and_no_float_copy_after_generate():
    from effigy.kvcache.baselines import fp16_cache, kivi_cache, rtn_cache
    from effigy.memory import held_bytes, reachable_tensors

    model = _tiny_llama()
    prompt = torch.randint(0, 97, (1, 30), generator=torch.Generator().manual_seed(1))
    caches = {"pm-kvq": PMKVQCache(model, budget_mb=0.02, window=8, chunk=8, group_size=16),
              "fp16": fp16_cache(model, 16), "rtn4": rtn_cache(model, 4, 16), "kivi2": kivi_cache(model, 2, 16, 16)}
    for name, cache in caches.items():
        model.generate(prompt, max_new_tokens=70, do_sample=False, past_key_values=cache)
        assert cache.get_seq_length() == 99
        assert abs(held_bytes(cache) - cache.nbytes) <= 0.05 * cache.nbytes, name
        float_copies = [t for t in reachable_tensors(cache) if t.dtype == torch.float32 and t.numel() > 16]
        assert not float_copies, f"{name} keeps float tensors {[tuple(t.shape) for t in float_copies]}"
    assert caches["pm-kvq"].widths() != [16, 16]  # the budget forced it to narrow


def test_a_long_prefill_leaves_only_the_window_in_fp16():
    from effigy.memory import held_bytes

    layer = ProgressiveKVLayer(budget_bytes=10**9, start_bits=4, sink=1, window=8, chunk=8, group_size=32)
    layer.update(torch.randn(1, 2, 400, 32), torch.randn(1, 2, 400, 32))
    assert layer.keys.shape[-2] < 16
    assert abs(held_bytes(layer) - layer.nbytes) <= 0.05 * layer.nbytes


@pytest.mark.parametrize("make", ["rtn", "kivi"])
def test_a_cache_without_budget_stores_the_same_whether_fed_at_once_or_token_by_token(make):
    from effigy.kvcache.baselines import KIVILayer

    layer_class, chunk = (ProgressiveKVLayer, 1) if make == "rtn" else (KIVILayer, 8)
    at_once, by_token = (layer_class(float("inf"), 4, 4, sink=0, window=8, chunk=chunk, group_size=32)
                         for _ in range(2))
    k, v = torch.randn(1, 2, 75, 32), torch.randn(1, 2, 75, 32)
    keys_once, values_once = at_once.update(k, v)
    _, _, keys_step, values_step = _feed_into(by_token, k, v)
    assert torch.equal(keys_once, keys_step) and torch.equal(values_once, values_step)
    assert at_once.main_tokens == by_token.main_tokens


def _feed_into(layer, k, v):
    for start in range(k.shape[-2]):
        keys, values = layer.update(k[..., start:start + 1, :], v[..., start:start + 1, :])
    return k, v, keys, values
