"""PM-KVQ on a user's causal LM (https://arxiv.org/abs/2505.18610): calibration text from the model's own answers,
the per-layer sensitivity and width allocation for a KV budget (``effigy kvquant calibrate``), and greedy
generation through the progressive cache (``effigy kvquant generate``)."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import torch
from transformers import DynamicCache

from effigy.errors import KVBudgetError
from effigy.evaluate.measure import Progress, no_progress

# calibration text: the FP model's own step-by-step answers to other problems than the evaluated ones
CALIBRATION_PROMPTS = (
    "A farmer has 45 sheep and sells 18 of them, then buys 7 more. How many sheep does he have now? "
    "Solve it step by step.",
    "A rectangle is 12 cm long and 5 cm wide. What are its area and its perimeter? Explain each step.",
    "Lisa reads 14 pages a day. How many days does she need for a book of 200 pages? Think step by step.",
    "What is 15 percent of 240? Show your reasoning step by step and check the result.",
    "A bus carries 38 people. At the first stop 9 get off and 12 get on. How many are on the bus now? "
    "Explain step by step.",
    "Explain step by step how to convert 3.5 hours into minutes and seconds.",
)


def chat_ids(tokenizer, text: str) -> torch.Tensor:
    """The user message through the model's chat template; plain text for a base model without one."""
    if not getattr(tokenizer, "chat_template", None):
        return tokenizer(text, return_tensors="pt")["input_ids"]
    ids = tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                        return_tensors="pt")
    return ids if torch.is_tensor(ids) else ids["input_ids"]


@torch.no_grad()
def greedy(model, ids: torch.Tensor, tokens: int, cache, streamer=None) -> tuple[torch.Tensor, float]:
    """``tokens`` new tokens (EOS ignored: a long trace is the point) and the seconds it took; ``streamer``
    (a transformers streamer) sees each token as it comes."""
    start = time.perf_counter()
    out = model.generate(ids, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False, past_key_values=cache,
                         streamer=streamer)
    return out[:, ids.shape[1]:], time.perf_counter() - start


def calibration_text(model, tokenizer, sequences: int, length: int) -> list[torch.Tensor]:
    """Real text for calibration: the FP model's greedy step-by-step answers to calibration prompts that
    are not the evaluated ones (random token ids have other key/value statistics and gradients than the
    text the cache will hold), ``sequences`` of them, each ``length`` tokens long, prompt included."""
    if sequences > len(CALIBRATION_PROMPTS):
        raise KVBudgetError(f"{sequences} calibration sequences: there are {len(CALIBRATION_PROMPTS)} calibration prompts")
    texts = []
    for prompt in CALIBRATION_PROMPTS[:sequences]:
        ids = chat_ids(tokenizer, prompt)[:, : length // 2]
        new, _ = greedy(model, ids, length - ids.shape[1], DynamicCache(config=model.config))
        texts.append(torch.cat([ids, new], 1)[0])
    return texts


def calibrate_allocation(model_name: str, budget_mb: float, target_length: int, out: Path, sequences: int = 4,
                         length: int = 256, interpolate: bool = True, group_size: int = 32,
                         progress: Progress = no_progress, command: str = "") -> dict[str, int]:
    """Per-layer KV sensitivity (gradient-weighted) on the model's own calibration text and the block-wise
    width allocation for ``budget_mb`` at ``target_length``, saved to ``out``.

    Args:
        model_name: ``smollm2`` (shipped), a .gguf file or a local transformers folder.
        budget_mb: main KV-cache memory for all layers at the target length (MiB).
        target_length: the sequence length the budget is planned for.
        out: the allocation JSON to write.
        sequences: calibration sequences (FP answers to calibration prompts).
        length: tokens per calibration sequence.
        interpolate: stretch calibration positions to the target length.
        group_size: KV elements per scale (a divisor of head_dim).
        progress: the progress reporter.
        command: the command line recorded in the file.
    Returns:
        The width per layer.
    """
    from effigy.kvcache.allocation import save_allocation
    from effigy.kvcache.calibrate import allocate_kv_bits, kv_sensitivity
    from effigy.kvcache.progressive import kv_geometry
    from effigy.models.encoders.llm import load_causal_lm

    model, tokenizer, _ = load_causal_lm(model_name)
    _, kv_heads, head_dim = kv_geometry(model.config)
    data = calibration_text(model, tokenizer, sequences, length)
    stretch = max(1.0, target_length / length) if interpolate else 1.0
    table = kv_sensitivity(model, data, stretch=stretch, group_size=group_size,
                           progress=progress("sensitivity", sequences))
    widths = allocate_kv_bits(table, budget_mb, target_length, kv_heads, head_dim, group_size)
    save_allocation(out, widths, budget_mb, target_length, group_size, table, command)
    return widths


def generate(model_name: str, prompt: str, budget_mb: float, allocation: Path | None = None,
             max_new_tokens: int = 256, window: int = 128, streamer=None,
             decoded_so_far: Callable[[str], None] | None = None) -> dict:
    """Greedy generation through :class:`~effigy.kvcache.progressive.PMKVQCache` at ``budget_mb``.

    Args:
        model_name: ``smollm2`` (shipped), a .gguf file or a local transformers folder.
        prompt: the user message (through the chat template, where the model has one).
        budget_mb: main KV-cache memory for all layers (MiB).
        allocation: widths from :func:`calibrate_allocation` (default: the cache's own).
        max_new_tokens: tokens to generate.
        window: the recent tokens the cache keeps at full precision.
        streamer: a transformers streamer that sees each token as it comes (with a ``tokens`` list, what was
            generated is handed to ``decoded_so_far`` when the budget runs out, so it is not lost).
        decoded_so_far: called with the text generated before a :class:`KVBudgetError`, which then propagates.
    Returns:
        The text, token count, seconds, KV bytes held and counted, and the widths.
    """
    from effigy.kvcache.allocation import read_allocation
    from effigy.kvcache.progressive import PMKVQCache
    from effigy.memory import held_bytes
    from effigy.models.encoders.llm import load_causal_lm

    kwargs = {} if allocation is None else read_allocation(allocation)
    model, tokenizer, _ = load_causal_lm(model_name)
    cache = PMKVQCache(model, budget_mb, window=window, **kwargs)
    ids = chat_ids(tokenizer, prompt)
    cache.check_fits(ids.shape[1] + max_new_tokens)  # refused now, not after minutes of generation
    try:
        new, seconds = greedy(model, ids, max_new_tokens, cache, streamer)
    except KVBudgetError:
        if decoded_so_far is not None:
            decoded_so_far(tokenizer.decode(getattr(streamer, "tokens", []), skip_special_tokens=True))
        raise
    return {"text": tokenizer.decode(new[0], skip_special_tokens=True), "tokens": new.shape[1], "seconds": seconds,
            "kv_bytes_held": held_bytes(cache), "kv_bytes_counted": cache.nbytes, "widths": cache.widths()}
