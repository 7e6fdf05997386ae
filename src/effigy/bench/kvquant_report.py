"""The Markdown of ``effigy bench kvquant``: how each number was measured, then one row per cache and budget."""
from __future__ import annotations

from effigy.bench.contract import Bench, json_and_markdown
from effigy.bench.kvquant import KVBenchSettings, model_slug, run_kv_bench
from effigy.evaluate.report import markdown_table

COLUMNS = [("method", "method"), ("budget_average_bits", "budget (avg bits)"), ("kv_bytes_held", "KV bytes held"),
           ("kv_bytes_counted", "KV bytes counted"), ("kl", "teacher-forced KL"), ("perplexity", "perplexity"),
           ("agreement_tokens", "tokens before divergence"), ("retrieval", "retrieval"),
           ("tokens_per_s_ratio_vs_fp", "tokens/s vs FP cache")]


def render(result: dict) -> str:
    """The results file's Markdown: how each number was measured, then one row per cache and budget."""
    s = result["settings"]
    return (f"# PM-KVQ on {result['model']}\n\nCommand: `{result['command']}` (seed {s['seed']})  \n"
            f"{s['prompts']} chain-of-thought prompts, FP greedy traces of {s['trace_tokens']} tokens; budgets "
            f"planned for {result['target_length']} tokens (the longest trace with its prompt, or retrieval "
            "problem); KL(FP || method) and perplexity teacher-forced on "
            "those traces; KV bytes held: distinct tensor storages reachable from the cache after the trace "
            "(effigy.memory.held_bytes), beside the bytes the cache counts; agreement: greedy tokens equal to the "
            f"FP trace before the first difference (of {s['agreement_tokens']}); retrieval: passcode problems the FP "
            f"model solves ({result['retrieval_solved_by_fp']}). Calibration: {result['calibration']}. Allocations "
            "(bits per layer): see the JSON.\n\n" + markdown_table(result["rows"], COLUMNS))


def _run(settings: KVBenchSettings, progress) -> dict:
    from effigy.models.encoders.llm import load_causal_lm

    model, tokenizer, description = load_causal_lm(settings.model)
    return run_kv_bench(model, tokenizer, settings, progress, description)


BENCH = Bench("kvquant", KVBenchSettings, _run, json_and_markdown(render),
              lambda result, s: (result, COLUMNS, "PM-KVQ at equal KV memory"), model=lambda s: model_slug(s.model))
