"""``load_causal_lm`` and ``effigy kvquant ... --model DIR`` on a tiny local transformers folder (Qwen2
geometry: biased projections, 2 KV heads)."""
import json
import sys

import pytest
import torch

from effigy import cli
from effigy.errors import CheckpointError
from effigy.models.encoders.llm import load_causal_lm


@pytest.fixture
def tiny_qwen_folder(tmp_path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import Qwen2Config, Qwen2ForCausalLM
    from transformers.models.qwen2.tokenization_qwen2 import Qwen2Tokenizer

    bpe = Tokenizer(models.BPE())  # a byte-level BPE like Qwen2's own, trained on one sentence
    bpe.pre_tokenizer, bpe.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    bpe.train_from_iterator(["the train leaves at nine and arrives at noon how long is the trip"],
                            trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"],
                                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = Qwen2Tokenizer(tokenizer_object=bpe)
    config = Qwen2Config(vocab_size=320, hidden_size=128, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)
    torch.manual_seed(0)
    Qwen2ForCausalLM(config).save_pretrained(tmp_path / "qwen")
    tokenizer.save_pretrained(tmp_path / "qwen")
    return tmp_path / "qwen"


def test_a_local_folder_loads_in_float32_with_its_tokenizer(tiny_qwen_folder):
    model, tokenizer, description = load_causal_lm(str(tiny_qwen_folder))
    assert type(model).__name__ == "Qwen2ForCausalLM" and model.dtype == torch.float32 and not model.training
    assert model.config.num_key_value_heads == 2 and model.model.layers[0].self_attn.k_proj.bias is not None
    assert tokenizer.decode(tokenizer("the train")["input_ids"]) == "the train" and "qwen" in description


def test_pickled_folders_and_missing_gguf_files_are_refused(tiny_qwen_folder, tmp_path):
    for weights in tiny_qwen_folder.glob("*.safetensors"):
        weights.unlink()
    (tiny_qwen_folder / "pytorch_model.bin").write_bytes(b"\\x80\\x04not really")
    with pytest.raises(CheckpointError, match="refuses pickles"):
        load_causal_lm(str(tiny_qwen_folder))
    with pytest.raises(CheckpointError, match="no GGUF file"):
        load_causal_lm(str(tmp_path / "missing.gguf"))


def test_kvquant_generate_runs_on_any_local_causal_lm(tiny_qwen_folder, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["effigy", "kvquant", "generate", "--model", str(tiny_qwen_folder), "--prompt",
                                      "how long is the trip", "--max-new-tokens", "40", "--window", "8",
                                      "--budget-mb", "0.01", "--json"])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    captured = capsys.readouterr()
    assert (exit_info.value.code or 0) == 0, captured.err
    summary = json.loads(captured.out)
    assert summary["tokens"] == 40 and summary["kv_bytes_held"] > 0 and len(summary["widths"]) == 2
