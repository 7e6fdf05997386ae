import torch
from transformers import LlamaConfig, LlamaForCausalLM

from effigy.bench.kvquant import KVBenchSettings, fixed_width_for, run_kv_bench


class _Tokenizer:
    """Enough of a tokenizer for the bench: digits-and-letters text <-> ids below 97."""

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
