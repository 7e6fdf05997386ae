import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from effigy.errors import KVBudgetError
from effigy.kvcache.calibrate import allocate_kv_bits, kv_sensitivity
from effigy.kvcache.progressive import PMKVQCache, main_cache_bytes


def _tiny_llama():
    config = LlamaConfig(vocab_size=97, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096)
    return LlamaForCausalLM(config).eval()


def test_sensitivity_grows_as_bits_fall_and_positions_can_be_stretched():
    model = _tiny_llama()
    sequences = [torch.randint(0, 97, (48,), generator=torch.Generator().manual_seed(i)) for i in range(2)]
    table = kv_sensitivity(model, sequences, bits=(8, 4, 2), group_size=16)
    assert set(table.scores) == {"0", "1", "2"}
    assert all(row[16] == 0 < row[8] < row[4] < row[2] for row in table.scores.values())
    stretched = kv_sensitivity(model, sequences, bits=(8, 4, 2), stretch=16, group_size=16)
    assert stretched.scores != table.scores  # keys at stretched positions are rotated differently
    assert all(p.grad is None for p in model.parameters())  # no gradients left behind


def test_allocation_respects_the_budget_and_feeds_the_cache():
    model = _tiny_llama()
    sequences = [torch.randint(0, 97, (32,), generator=torch.Generator().manual_seed(0))]
    table = kv_sensitivity(model, sequences, group_size=16)
    budget_mb, length = 0.1, 1024
    bits = allocate_kv_bits(table, budget_mb, length, kv_heads=2, head_dim=16, group_size=16)
    used = sum(main_cache_bytes(b, length - 1, 1, 2, 16, 16) for b in bits)
    assert used <= budget_mb * 2**20 and len(bits) == 3
    roomier = allocate_kv_bits(table, 4 * budget_mb, length, kv_heads=2, head_dim=16, group_size=16)
    assert sum(roomier) > sum(bits)
    cache = PMKVQCache(model, budget_mb=budget_mb, allocation=bits, target_length=length, group_size=16)
    assert [layer.min_bits for layer in cache.layers] == bits
    with pytest.raises(KVBudgetError, match="too small"):
        allocate_kv_bits(table, 0.001, length, kv_heads=2, head_dim=16, group_size=16)
