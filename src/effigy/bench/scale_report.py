"""Markdown for ``effigy bench scale``: the model section, the per-layer section and the KV section."""
from __future__ import annotations

from dataclasses import dataclass

from effigy.bench.contract import Bench, json_and_markdown
from effigy.bench.scale import ScaleBenchSettings, run_scale_bench
from effigy.bench.scale_attention import AttentionScaleSettings, run_attention_section
from effigy.bench.scale_kv import KVScaleSettings
from effigy.bench.scale_litevar import LiteVARScaleSettings, run_litevar_section
from effigy.evaluate.report import machine_line, markdown_table

MODEL_COLUMNS = [("variant", "variant"), ("tokens", "tokens"), ("backends", "effigy backend"),
                 ("speedup_vs_fp32", "speed-up vs fp32 eager"), ("speedup_vs_bf16_compiled", "vs bf16 compiled"),
                 ("relative_output_error", "output error vs fp32"), ("first_call_s", "first call (s)"),
                 ("held_bytes", "bytes held"), ("held_bytes_ratio", "held / fp32"),
                 ("linear_held_bytes_ratio", "quantized linears held / fp32"),
                 ("rss_converted_mib", "RSS converted (MiB)"), ("rss_after_call_mib", "RSS after first call (MiB)"),
                 ("peak_rss_call_mib", "peak RSS of the call (MiB)"),
                 ("peak_rss_build_mib", "peak RSS building (MiB)")]
LAYER_COLUMNS = [("layer", "layer"), ("shape", "shape"), ("tokens", "tokens"), ("path", "path"), ("backend", "backend"),
                 ("speedup_vs_fp32", "speed-up vs fp32"), ("latency_ms", "ms"), ("held_bytes_ratio", "held / fp32"),
                 ("relative_output_error", "output error vs fp32")]
KV_COLUMNS = [("cache", "cache"), ("tokens", "tokens"), ("held_bytes", "bytes held"), ("counted_bytes", "bytes counted"),
              ("tokens_per_s", "decode tokens/s"), ("tokens_per_s_ratio_vs_dynamic", "vs DynamicCache")]
KV_MEMORY_COLUMNS = [("cache", "cache"), ("tokens", "tokens"), ("held_bytes", "bytes held"),
                     ("counted_bytes", "bytes counted"), ("rss_growth_mib", "RSS growth (MiB)"),
                     ("peak_rss_mib", "peak RSS (MiB)")]


def render_scale(result: dict, command: str) -> str:
    parts = [f"# effigy bench scale: {result['architecture']} with {result['weights']} weights",
             f"Command: `{command}`  \n{machine_line(result['machine'])}  \n"
             "Random weights: these tables measure speed and memory only, not quality. Output error is relative "
             "L2 against the fp32 output of the same random model and inputs. Speed-ups are medians of "
             f"{result['settings']['repeats']} interleaved rounds after a warm-up, measured in this one run. "
             "Bytes held: distinct tensor storages reachable from the model (effigy.memory.held_bytes); RSS: "
             "a fresh process per variant that builds the fp32 model, converts it (RSS converted) and runs one "
             "call (its peak counted from after conversion; for a compiled variant the call compiles it, so RSS "
             "after it is the compiled model's resident memory, frozen constants included). Rows without "
             "'compiled' run eagerly: eager integer timings are eager. Compiled rows use effigy.compile's inductor "
             "settings for this CPU (see docs/kernels.md); 'first call' is the compile time plus one call.",
             *([f"## One transformer call (CFG batch of {result['settings']['cfg_batch']}{_text_inputs(result)})",
                markdown_table(result["rows"], MODEL_COLUMNS)] if result["rows"] else [])]
    if not result["machine"].get("vnni"):  # (files written on VNNI machines before this check listed them too)
        parts += [f"Not run on this machine: {name} ({why})." for name, why in result.get("skipped", {}).items()]
    if result["layers"]:
        parts += ["## Single layers of DiT-XL/2's shapes", markdown_table(result["layers"], LAYER_COLUMNS)]
    if "attention" in result:
        parts += render_attention(result["attention"])
    if "litevar" in result:
        parts += render_litevar(result["litevar"])
    if "kv" in result:
        kv = result["kv"]
        parts += [f"## KV caches on {kv['model']}",
                  "The same random token ids prefilled through each cache in chunks of "
                  f"{kv['settings']['prefill_chunk']}, then {kv['settings']['decode_tokens']} decoding steps with the "
                  "caches taking turns. PM-KVQ's budget is the equal-memory budget at that length spread evenly over "
                  "layers (no calibrated allocation).", markdown_table(kv["rows"], KV_COLUMNS),
                  f"### Memory only at {kv['settings']['memory_length']} tokens",
                  "Caches of SmolLM2's geometry filled with random keys and values in a fresh process each; no model "
                  "runs, no quality claim.", markdown_table(kv["memory_only"], KV_MEMORY_COLUMNS)]
    return "\n\n".join(parts)


ATTENTION_COLUMNS = [("variant", "variant"), ("attention_flops_fraction", "attention FLOPs vs full"),
                     ("attention_s", "attention s"), ("attention_speedup", "attention speed-up"), ("run_s", "run s"),
                     ("speedup", "whole-run speed-up")]


def render_attention(section: dict) -> list[str]:
    s = section["settings"]
    compiled = ("Rows named 'compiled' run the whole model under effigy.compile (the scale bench's fp32 compiled and "
                "vidit-q-w8a8 compiled variants), DiTFastAttn's processors eagerly between the compiled pieces; their "
                "attention seconds are not measured (hooks would change the compiled graph). Other rows are eager. "
                if s.get("compiled") else "All rows eager. ")
    return [f"## Attention: DiTFastAttn plans at {s['tokens']} tokens",
            f"A denoising run of {s['steps']} calls (CFG batch 2) of {s['blocks']} blocks of {s['architecture']}'s "
            f"width (random weights: speed only), window {s['window_fraction']:g} of the tokens; fixed plans (the "
            "first step full; techniques per step in the JSON). Attention: seconds inside the self-attention "
            f"modules, projections included. Median of {s['repeats']} interleaved round(s) after a warm-up round. "
            f"{compiled}FirstBlockCache at diffusers' default threshold: time only (on random weights its skipping "
            "says nothing about quality). Speed-ups are against eager full attention.",
            markdown_table(section["rows"], ATTENTION_COLUMNS)]


LITEVAR_COLUMNS = [("variant", "variant"), ("generation_s", "generation s"), ("speedup", "speed-up vs dense eager"),
                   ("attention_s", "attention s"), ("attention_speedup", "attention speed-up"),
                   ("first_generation_s", "first generation s (compiles)"),
                   ("held_mib", "held MiB"), ("rss_built_mib", "RSS, model built (MiB)"),
                   ("peak_rss_generation_mib", "peak RSS in a generation (MiB)")]


def render_litevar(section: dict) -> list[str]:
    s, model = section["settings"], section["model"]
    return [f"## LiteVAR at VAR-d{s['depth']} size",
            f"Whole generations of {s['images']} image(s) (CFG batch {2 * s['images']}) by a random VAR-d{s['depth']} "
            f"({model['num_layers']} layers, {model['heads']} heads of 64; scales {model['scales']}: "
            f"{sum(x * x for x in model['scales'])} tokens), top-k {s['top_k']}, guidance {s['guidance']:g}; random "
            "weights: speed only. Fixed plan, the same on every layer and head (per query scale in the JSON): scales "
            f"of side <= {s['full_side']} whole, bands of half-width {s['own_half_width']} over the query's own and "
            f"previous scale and {s['coarse_half_width']} over coarser ones (kept pairs {section['kept_pairs']:.4f}); "
            f"ASC on every layer from scale {s['asc_from_scale']} on ({section['asc_shared']:.2f} of the (layer, "
            "scale) calls). MDWA runs as one masked SDPA call, so it computes every pair "
            "(benchmarks/results/checks/mdwa_kernels.md says why). Attention: seconds inside the attention modules, "
            "projections included (eager rows only: hooks would break a compiled graph). Compiled rows: every block "
            "under effigy.compile (static shapes, one graph per scale); W8A8 is the litevar-w8a8 recipe on "
            f"graph-int8. Medians of {s['repeats']} interleaved rounds after a warm-up round (which compiles); "
            "speed-ups against dense fp32 eager. Memory: a fresh process per row builds it (RSS, model built) and "
            "runs one generation (its peak RSS; a compiled row's includes compiling).",
            markdown_table(section["rows"], LITEVAR_COLUMNS)]


def _text_inputs(result: dict) -> str:
    from effigy.bench.scale import TEXT_TOKENS

    text = result["architecture"] == "pixart-alpha"
    return f", cross-attention to {TEXT_TOKENS} random T5-sized text tokens" if text else ""


@dataclass
class ScaleRun:
    """A scale bench run: the model section's settings, the per-layer token counts (empty: skipped) and the KV
    section's settings (None: skipped)."""

    calls: ScaleBenchSettings
    layer_tokens: tuple[int, ...] = (64, 256, 1024, 4096)
    kv: KVScaleSettings | None = None
    attention: AttentionScaleSettings | None = None
    litevar: LiteVARScaleSettings | None = None


def run_scale(settings: ScaleRun, progress) -> dict:
    result = run_scale_bench(settings.calls, progress, settings.layer_tokens, settings.kv)
    if settings.attention is not None:
        result["attention"] = run_attention_section(settings.attention, progress)
    if settings.litevar is not None:
        result["litevar"] = run_litevar_section(settings.litevar, progress)
    return result


BENCH = Bench("scale", ScaleRun, run_scale,
              json_and_markdown(lambda result: render_scale(result, result["command"])),
              lambda result, s: (result, MODEL_COLUMNS, f"recipes at {s.calls.architecture} size (random weights)"),
              model=lambda s: s.calls.architecture, file_name="scale")
