import torch
from transformers import LlamaConfig, LlamaForCausalLM

from effigy.bench.kvquant import KVBenchSettings, fixed_width_for, run_kv_bench


class _Tokenizer:
    """Enough of a tokenizer for the bench: digits-and-letters text <-> ids below 97."""

    chat_template = "first 60 characters"

    def apply_chat_template(self, messages, add_generation_prompt=True, return_tensors="pt"):
        text = messages[0]["content"][:60]
        return torch.tensor([[ord(c) % 97 for c in text]])

    def __call__(self, text, add_special_tokens=False, return_tensors="pt"):
        return {"input_ids": torch.tensor([[ord(c) % 97 for c in text]])}

    def decode(self, ids):
        return "".join(chr(48 + int(i) % 10) for i in ids)


def test_kv_bench_runs_every_method_and_ablation_on_a_tiny_llama():
    config = LlamaConfig(vocab_size=97, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024)
    model = LlamaForCausalLM(config).eval()
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    settings = KVBenchSettings(trace_tokens=64, prompts=1, average_bits=(8.0,), window=8, group_size=16,
                               calibration_sequences=1, calibration_length=32, agreement_tokens=16,
                               retrieval_problems=1, retrieval_filler=1)
    result = run_kv_bench(model, _Tokenizer(), settings)
    names = [row["method"] for row in result["rows"]]
    assert names[0] == "fp16" and "pm-kvq @8b" in names and "kivi 4-bit @8b" in names
    assert {"no progressive @8b", "no block allocation @8b", "no positional interp. @8b"} <= set(names)
    rows = {row["method"]: row for row in result["rows"]}
    assert rows["fp16"]["kl"] < 1e-6 and rows["fp16"]["kl"] < rows["rtn 4-bit @8b"]["kl"]
    assert rows["pm-kvq @8b"]["kv_bytes_held"] < rows["fp16"]["kv_bytes_held"]
    assert len(result["allocations"]["alloc 8 bits (PI)"]) == 2
    assert fixed_width_for(5.0, 32) == 4 and fixed_width_for(3.0, 32) == 2


def test_a_budget_that_cannot_hold_the_model_says_what_would():
    import pytest
    from transformers import Qwen2Config

    from effigy.bench.kvquant import equal_memory_budget_mb
    from effigy.errors import KVBudgetError

    qwen_like = Qwen2Config(num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2, hidden_size=896)
    with pytest.raises(KVBudgetError, match="at least 845 tokens of context") as refusal:
        equal_memory_budget_mb(qwen_like, 4.0, 839, sink=1, window=32, group_size=32)  # 2.99 bits per element left
    assert "2.99 bits per element" in str(refusal.value)
    assert equal_memory_budget_mb(qwen_like, 4.0, 845, sink=1, window=32, group_size=32) > 0
    with pytest.raises(KVBudgetError, match="more average bits"):
        equal_memory_budget_mb(qwen_like, 3.0, 4096, sink=1, window=32, group_size=32)  # never enough at 3 bits
