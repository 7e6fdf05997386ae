"""PM-KVQ against its baselines at equal KV memory, on long chain-of-thought traces of a real LLM.

The FP model (float32 cache) writes a greedy trace per prompt; every cache is then judged on it:
  teacher-forced KL(FP || method) and perplexity of the FP trace, fed through the cache in chunks
  token agreement: how many tokens the method's own greedy generation shares with the FP trace
      before the first divergence
  retrieval: a passcode stated at the start of a long context, asked for at the end (problems the
      FP model solves)
plus the KV bytes each cache holds at the end and its tokens/s against the FP cache.
"""
from __future__ import annotations

import copy
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from transformers import DynamicCache

from effigy.bench.variants import RESULT_SCHEMA
from effigy.errors import KVBudgetError
from effigy.evaluate.measure import Progress, machine_facts, no_progress
from effigy.evaluate.report import SettingsRecord
from effigy.kvcache.baselines import fp16_cache, kivi_cache, rtn_cache, transformers_fp8_cache
from effigy.kvcache.calibrate import allocate_kv_bits, kv_sensitivity
from effigy.kvcache.progressive import PMKVQCache, kv_geometry, main_cache_bytes
from effigy.kvcache.reparam import fold_key_scales, search_key_scales
from effigy.memory import held_bytes
from effigy.workflows.kvquant import calibration_text, chat_ids, greedy

COT_PROMPTS = (
    "A shop sells pencils at 3 dollars and notebooks at 7 dollars. Tom buys 4 pencils and 2 notebooks. "
    "How much does he pay? Think step by step and explain every step in detail.",
    "A train leaves at 9:40 and the trip takes 2 hours and 35 minutes. When does it arrive? "
    "Reason carefully, step by step, and check your answer.",
    "Explain step by step how to find the greatest common divisor of 84 and 36, then verify it.",
    "Sara has twice as many apples as Ben. Together they have 27 apples. How many does each have? "
    "Work it out step by step.",
)
ANSWER_START = "The passcode is"
RETRIEVAL_ANSWER_TOKENS = 8
FILLER = ("The history of the river valley is long. Farmers planted wheat and barley in the spring, "
          "and traders brought salt and cloth from the coast. ")


@dataclass
class KVBenchSettings(SettingsRecord):
    model: str = "smollm2"  # see effigy.models.encoders.llm.load_causal_lm
    trace_tokens: int = 2048
    prompts: int = 2
    average_bits: tuple[float, ...] = (4.0, 6.0)  # budgets: average stored bits per KV element, all included
    window: int = 32
    sink: int = 1
    group_size: int = 32
    feed_chunk: int = 16
    calibration_sequences: int = 4  # FP greedy answers to CALIBRATION_PROMPTS, prompt included
    calibration_length: int = 256
    agreement_tokens: int = 128
    retrieval_problems: int = 4
    retrieval_filler: int = 64  # filler sentences (~28 tokens each) between the passcode and the question
    seed: int = 0


def model_slug(model: str) -> str:
    """The model's name in results paths: the shipped model's name, or a file or folder's stem."""
    stem = Path(model).stem if model.endswith(".gguf") or "/" in model else model
    return re.sub(r"[^a-z0-9.]+", "-", stem.lower()).strip("-")


@torch.no_grad()
def teacher_forced(model, ids: torch.Tensor, cache, chunk: int) -> torch.Tensor:
    """Log-probabilities of every next token of ``ids`` with the sequence fed through ``cache`` in chunks."""
    logits = [model(ids[:, s: s + chunk], past_key_values=cache, use_cache=True).logits
              for s in range(0, ids.shape[1], chunk)]
    return F.log_softmax(torch.cat(logits, 1).float(), -1)


def trace_scores(log_p_fp: torch.Tensor, log_q: torch.Tensor, ids: torch.Tensor, start: int) -> dict:
    """KL(FP || method) and the method's perplexity over the trace part (positions >= start)."""
    p, q = log_p_fp[:, start - 1:-1], log_q[:, start - 1:-1]
    kl = (p.exp() * (p - q)).sum(-1).mean().item()
    nll = -q.gather(-1, ids[:, start:, None]).mean().item()
    return {"kl": kl, "perplexity": math.exp(nll)}


def retrieval_prompts(tokenizer, count: int, filler: int, seed: int) -> list[tuple[torch.Tensor, str]]:
    g = torch.Generator().manual_seed(seed)
    problems = []
    for _ in range(count):
        code = str(int(torch.randint(1000, 9999, (1,), generator=g)))
        text = (f"Remember this passcode: {code}. " + FILLER * filler +
                "What was the passcode given at the very beginning? Answer with the number only.")
        # the answer is started for the model ("The passcode is"): the 135M model then recalls the code
        # from ~2k tokens back in FP, where asked plainly it only repeats the question
        answer_start = tokenizer(ANSWER_START, add_special_tokens=False, return_tensors="pt")["input_ids"]
        problems.append((torch.cat([chat_ids(tokenizer, text), answer_start], 1), code))
    return problems


def run_kv_bench(model, tokenizer, settings: KVBenchSettings, progress: Progress = no_progress,
                 description: str = "SmolLM2-135M-Instruct (GGUF Q4_1, dequantized to float32)") -> dict:
    """Every cache of :func:`method_caches` judged on the FP model's own traces (see the module docstring).

    Args:
        model, tokenizer: a transformers causal LM (see :func:`effigy.models.encoders.llm.load_causal_lm`).
        settings: trace length, budgets, window, calibration.
        description: the model as the results name it.
    Returns:
        The result: one row per cache and budget, the allocations, settings and machine.
    """
    layers, kv_heads, head_dim = kv_geometry(model.config)
    prompts = [chat_ids(tokenizer, p) for p in COT_PROMPTS[: settings.prompts]]
    problems = retrieval_prompts(tokenizer, settings.retrieval_problems, settings.retrieval_filler, settings.seed)
    # the budgets are planned for the longest sequence any cache will hold: a trace, or a retrieval problem
    # and its answer; checked before minutes of FP traces, on the lengths known by then
    longest_problem = max((ids.shape[1] + RETRIEVAL_ANSWER_TOKENS for ids, _ in problems), default=0)
    for bits in settings.average_bits:
        equal_memory_budget_mb(model.config, bits, max(max(p.shape[1] for p in prompts) + settings.trace_tokens,
                                                       longest_problem),
                               settings.sink, settings.window, settings.group_size)
    advance = progress("FP traces", len(prompts))
    traces, fp_seconds = [], 0.0
    for ids in prompts:
        new, _ = greedy(model, ids, settings.trace_tokens, DynamicCache(config=model.config))
        traces.append(torch.cat([ids, new], 1))
        fp_seconds += greedy(model, ids, settings.agreement_tokens, DynamicCache(config=model.config))[1]
        advance()
    target = max(max(t.shape[1] for t in traces), longest_problem)
    solved = [p for p in problems if _answers(model, tokenizer, p, DynamicCache(config=model.config))]
    tables = calibrate(model, calibration_text(model, tokenizer, settings.calibration_sequences,
                                                     settings.calibration_length), settings, target, progress)
    reparameterized = {k: fold_key_scales(copy.deepcopy(model), tables.pop(f"scales {k}")) for k in ("pi", "plain")}
    methods = method_caches(model, settings, tables, target, kv_heads, head_dim)
    fp_log = [teacher_forced(model, t, DynamicCache(config=model.config), settings.feed_chunk) for t in traces]
    rows = []
    advance = progress("methods", len(methods))
    for name, (budget_bits, make, keys) in methods.items():
        # PM-KVQ runs on its key-reparameterized copy (FP-equivalent); the baselines on the model as is
        runner = reparameterized.get(keys, model)
        rows.append(evaluate_method(runner, tokenizer, name, budget_bits, make, traces, prompts, fp_log, solved,
                                    settings, fp_seconds))
        advance()
    return {"benchmark": "kvquant", "schema": RESULT_SCHEMA, "model": description,
            "settings": settings.to_dict(), "machine": machine_facts(), "target_length": target,
            "retrieval_solved_by_fp": f"{len(solved)}/{len(problems)}", "rows": rows,
            "calibration": f"FP greedy answers to {settings.calibration_sequences} calibration prompts, "
                           f"{settings.calibration_length} tokens each",
            "allocations": {k: v for k, v in tables.items() if k.startswith(("alloc", "alphas"))}}


def calibrate(model, sequences: list[torch.Tensor], settings: KVBenchSettings, target: int,
              progress: Progress) -> dict:
    """Sensitivity tables with and without positional interpolation (stretched to the trace length)."""
    advance = progress("KV sensitivity and key scales", 2 * len(sequences) + 2)
    stretch = max(1.0, target / settings.calibration_length)
    tables = {}
    for name, factor in (("pi", stretch), ("plain", 1.0)):
        tables[f"scales {name}"], tables[f"alphas {name}"] = search_key_scales(
            model, sequences, bits=2, group_size=settings.group_size, stretch=factor)
        advance()
        tables[name] = kv_sensitivity(model, sequences, stretch=factor, group_size=settings.group_size,
                                      progress=advance)
    return tables


def method_caches(model, settings: KVBenchSettings, tables: dict, target: int, kv_heads: int,
                  head_dim: int) -> dict[str, tuple[float | None, Callable, str]]:
    """name -> (average bits of its budget, cache factory, which model: "pi" / "plain" key-reparameterized
    copy or "as is"), every method at each budget."""
    s = settings
    methods: dict[str, tuple[float | None, Callable, str]] = {
        "fp16": (16.0, lambda: fp16_cache(model, s.group_size), "as is"),
        "transformers QuantizedCache fp8": (8.0, lambda: transformers_fp8_cache(model), "as is")}
    for bits in s.average_bits:
        budget_mb = equal_memory_budget_mb(model.config, bits, target, s.sink, s.window, s.group_size)
        widths = {k: allocate_kv_bits(tables[k], budget_mb, target, kv_heads, head_dim, s.group_size, s.sink)
                  for k in ("pi", "plain")}
        tables[f"alloc {bits:g} bits (PI)"], tables[f"alloc {bits:g} bits (no PI)"] = widths["pi"], widths["plain"]
        common = dict(target_length=target, sink=s.sink, window=s.window, group_size=s.group_size)
        fixed = fixed_width_for(bits, s.group_size)
        methods.update({
            f"pm-kvq @{bits:g}b": (bits, lambda b=budget_mb, w=widths["pi"]: PMKVQCache(model, b, w, **common), "pi"),
            f"  no progressive @{bits:g}b": (bits, lambda b=budget_mb, w=widths["pi"]: PMKVQCache(
                model, b, w, **common, start_bits=None), "pi"),
            f"  no block allocation @{bits:g}b": (bits, lambda b=budget_mb: PMKVQCache(
                model, b, None, sink=s.sink, window=s.window, group_size=s.group_size), "pi"),
            f"  no positional interp. @{bits:g}b": (bits, lambda b=budget_mb, w=widths["plain"]: PMKVQCache(
                model, b, w, **common), "plain"),
            f"rtn {fixed}-bit @{bits:g}b": (bits, lambda f=fixed: rtn_cache(model, f, s.group_size), "as is"),
            f"kivi {fixed}-bit @{bits:g}b": (bits, lambda f=fixed: kivi_cache(model, f, s.window, s.group_size),
                                             "as is"),
        })
    return methods


def equal_memory_budget_mb(config, bits: float, target: int, sink: int, window: int, group_size: int) -> float:
    """PM-KVQ's main-cache budget for the same memory as the whole cache at ``bits`` per element: its
    fp16 sink and window (up to window + chunk tokens) come out of it before the main cache gets the rest."""
    layers, kv_heads, head_dim = kv_geometry(config)
    fp16_mb = lambda tokens: layers * main_cache_bytes(16, tokens, 1, kv_heads, head_dim, group_size) / 2**20
    fp16_tokens = sink + 2 * window
    budget_mb = fp16_mb(target) * bits / 16 - fp16_mb(fp16_tokens)
    narrowest = 2 + 32 / group_size  # 2-bit keys and values with an fp16 scale and zero point per group
    main_bits = 16 * budget_mb / fp16_mb(target - fp16_tokens) if target > fp16_tokens else 0.0
    if main_bits < narrowest:
        needed = (fp16_tokens * (16 - narrowest) / (bits - narrowest)) if bits > narrowest else None
        longer = f"at least {math.ceil(needed)} tokens of context (prompt + trace), " if needed else ""
        raise KVBudgetError(f"{bits:g} average bits cannot hold this model's KV cache at {target} tokens: after the "
                            f"fp16 sink and window ({fp16_tokens} tokens) the main cache gets {main_bits:.2f} bits "
                            f"per element, below the {narrowest:g} that 2-bit keys and values with their scales need; "
                            f"use {longer}more average bits or a smaller window.")
    return budget_mb


def fixed_width_for(average_bits: float, group_size: int) -> int:
    """The widest fixed width whose storage (scales included) fits the average-bits budget."""
    fitting = [b for b in (8, 4, 2) if b + 32 / group_size <= average_bits + 1e-9]
    return fitting[0] if fitting else 2


def _answers(model, tokenizer, problem, cache) -> bool:
    ids, code = problem
    new, _ = greedy(model, ids, RETRIEVAL_ANSWER_TOKENS, cache)
    return code in tokenizer.decode(new[0])


def evaluate_method(model, tokenizer, name, budget_bits, make, traces, prompts, fp_log, solved, settings,
                    fp_seconds) -> dict:
    scores, counted, held = [], 0, 0
    for t, p, fp in zip(traces, prompts, fp_log):
        cache = make()
        scores.append(trace_scores(fp, teacher_forced(model, t, cache, settings.feed_chunk), t, p.shape[1]))
        # after the whole trace, the length the budget is for: what the cache counts, and the distinct
        # tensor storages it really holds
        counted, held = max(counted, cache.nbytes), max(held, held_bytes(cache))
    agreement, seconds = [], 0.0
    for t, ids in zip(traces, prompts):
        new, elapsed = greedy(model, ids, settings.agreement_tokens, make())
        seconds += elapsed
        reference = t[:, ids.shape[1]: ids.shape[1] + settings.agreement_tokens]
        differ = (new != reference).nonzero()
        agreement.append(int(differ[0, 1]) if len(differ) else new.shape[1])
    retrieved = sum(_answers(model, tokenizer, p, make()) for p in solved)
    return {"method": name.strip(), "budget_average_bits": budget_bits,
            "kl": sum(s["kl"] for s in scores) / len(scores),
            "perplexity": sum(s["perplexity"] for s in scores) / len(scores),
            "agreement_tokens": sum(agreement) / len(agreement),
            "retrieval": f"{retrieved}/{len(solved)}", "kv_bytes_counted": counted, "kv_bytes_held": held,
            "tokens_per_s_ratio_vs_fp": fp_seconds / seconds}
