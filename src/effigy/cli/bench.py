"""``effigy bench ...``: every benchmark writes JSON + Markdown under benchmarks/results/<bench>/<model>/."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from effigy.cli._common import (
    COMPILED_DEFAULT,
    COMPILED_HELP,
    CROSSOVER_DEFAULT,
    CROSSOVER_HELP,
    JSON,
    RESULTS_OUT,
    SEED,
    check_choice,
    command_line,
    console,
    deprecated,
    finite,
    fresh_run_folder,
    parse_batches,
    parse_bits,
    parse_compiled,
    parse_counts,
    parse_domains,
    parse_floats,
    parse_shares,
    parse_trust_regions,
    progress,
    show,
    writable_folder,
)
from effigy.errors import EffigyError

app = typer.Typer(help="Benchmarks that write JSON + Markdown under benchmarks/results/.", no_args_is_help=True)

SUBSET_HELP = "t2i models: evaluate on the prompts of this FlashEval subset (`effigy flasheval search`) instead."


def checked_subset(subset: Path | None, prompts_alias: str | None = None) -> str | None:
    """``--subset FILE`` (or the old ``--prompts subset:FILE``) as the suites read it, ``subset:FILE``; the file
    read and checked before any model loads."""
    prompts = deprecated(prompts_alias, "--prompts subset:FILE", "--subset FILE",
                         None if subset is None else f"subset:{subset}")
    if prompts is None:
        return None
    from effigy.evaluate.suites import SamplingSettings, evaluation_scenes

    evaluation_scenes(SamplingSettings(prompts=prompts))
    return prompts


def square_tokens(tokens: int, option: str) -> int:
    """A token count that a square latent of 2x2 patches gives (256, 1024, 4096, ...), or one clear error."""
    side = round(tokens ** 0.5)
    if side * side != tokens:
        raise typer.BadParameter(f"{tokens} is not a square number of patches; use 1024, 4096 or 16384.",
                                 param_hint=option)
    return tokens


def results_stem(out: Path | None, bench: str, model: str, name: str | None = None) -> Path:
    """``<out>/<bench>/<model>/<name>``: where one bench run on one model writes its files (``out`` None: a fresh
    run folder, so a quick check never overwrites committed results)."""
    slug = model.replace("-", "_")
    folder = writable_folder((out or fresh_run_folder()) / bench / model)  # checked before the work, not after
    return folder / (name or f"{bench}_{slug}")


def run_bench(name: str, settings, out: Path | None, as_json: bool, file_name: str | None = None,
              renames: dict[str, str] | None = None, stem: Path | None = None) -> dict:
    """Every bench command's tail: place the files (``<out>/<bench>/<model>/``), run with progress, write, print
    the table (or the JSON) and the bench's note.

    Args:
        name: a declared bench (:data:`effigy.bench.contract.DECLARED`).
        settings: its settings.
        out: the results root (None: a fresh folder under runs/).
        as_json: print the JSON instead of the table.
        file_name: another stem for the files than the bench's own.
        renames: files renamed after writing ({"json": "results.json"}: the demo's names).
        stem: the files' own place instead of ``<out>/<bench>/<model>/`` (the demo's folder).
    Returns:
        The result.
    """
    from effigy.bench.contract import get_bench

    bench = get_bench(name)
    stem = stem or results_stem(out, name, bench.model(settings), file_name or bench.file_name)
    with progress(not as_json) as reporter:
        result = bench.run(settings, reporter)
    paths = bench.write(result, stem, command_line())
    for kind, new_name in (renames or {}).items():
        paths[kind] = paths[kind].replace(stem.parent / new_name)
    shown, columns, title = bench.table(result, settings)
    show(shown, columns, title, paths, as_json)
    note = bench.note(result)
    if note and not as_json:
        console.print(note)
    return result


@app.command("quant")
def bench_quant(
    model: str = typer.Option("dit-digits", help="Shipped model: dit-digits or t2i-shapes."),
    samples_per_class: int = typer.Option(50, min=2, max=1000),
    steps: int = typer.Option(20, min=1, max=200),
    seed: int = SEED,
    memory: bool = typer.Option(True, help="Measure peak memory in a fresh process per variant (~10 s each)."),
    average_bits: float = typer.Option(4.0, help="Average weight bits the mixed-precision allocation may spend.",
                                       callback=finite),
    mp_bits_alias: Optional[float] = typer.Option(None, "--mp-bits", hidden=True, callback=finite),
    sensitivity_steps: int = typer.Option(10, min=1, max=50, help="Sampling steps of each sensitivity run."),
    mp_candidates: str = typer.Option("3,4,6,8", help="Candidate weight bit-widths of the mixed-precision search."),
    sensitivity_metric: str = typer.Option("denoiser", help="denoiser: errors of the replayed FP denoiser calls; "
                                           "propagated: the same weighted by each call's gain to the final sample; "
                                           "samples: SSIM / alignment of the final samples."),
    mp_around: str = typer.Option("float", help="float: score one layer with the rest in FP; base: with the rest at "
                                  "uniform W4."),
    mp_max_moved: str = typer.Option("0.05,0.1,0.15,0.2,0.3,inf", help="ILP trust regions: sum(size x |bits - 4|) "
                                     "at most this fraction of all weights; 'inf' for none. With several, a "
                                     "validation run (seed + 1) picks one, or uniform W4."),
    mp_granularity: str = typer.Option("layer", help="layer: one width per linear layer; block: per (block, kind) "
                                       "group (attn1 / attn2 / ff / norm1)."),
    bootstrap_resamples: int = typer.Option(1000, min=100, help="Resamples of the paired bootstrap intervals "
                                            "(MP vs uniform W4A8, W8A8 / W4A8 vs FP)."),
    subset: Optional[Path] = typer.Option(None, help=SUBSET_HELP),
    prompts_alias: Optional[str] = typer.Option(None, "--prompts", hidden=True),
    compiled: str = typer.Option(COMPILED_DEFAULT, help=COMPILED_HELP),
    crossover_batches: str = typer.Option(CROSSOVER_DEFAULT, help=CROSSOVER_HELP),
    out: Optional[Path] = RESULTS_OUT,
    as_json: bool = JSON,
) -> None:
    """FP, naive W8A8, ViDiT-Q W8A8 (+ its fbgemm run), RTN W4A8, ViDiT-Q W4A8 and W4A8-MP on a shipped model,
    eager and (FP, W8A8, W4A8) compiled."""
    from effigy.bench.quant import QuantBenchSettings
    from effigy.recipes.mixed_precision import AROUND, GRANULARITIES
    from effigy.workflows.mixed_precision import SENSITIVITY_METRIC_NAMES

    mp_bits = deprecated(mp_bits_alias, "--mp-bits", "--average-bits", average_bits)
    candidates = parse_bits(mp_candidates)
    if not min(candidates) <= mp_bits <= max(candidates):  # the ILP could not meet it: say so before the analysis
        raise EffigyError(f"--average-bits {mp_bits:g} lies outside the candidate widths {candidates}; pick a budget "
                          "between the narrowest and the widest.")
    settings = QuantBenchSettings(
        model=model, samples_per_class=samples_per_class, steps=steps, seed=seed, measure_memory=memory,
        mp_average_bits=mp_bits, sensitivity_steps=sensitivity_steps, mp_candidate_bits=candidates,
        sensitivity_metric=check_choice(sensitivity_metric, SENSITIVITY_METRIC_NAMES, "--sensitivity-metric"),
        mp_granularity=check_choice(mp_granularity, GRANULARITIES, "--mp-granularity"),
        mp_around=check_choice(mp_around, AROUND, "--mp-around"), mp_max_moved=parse_trust_regions(mp_max_moved),
        bootstrap_resamples=bootstrap_resamples, prompts=checked_subset(subset, prompts_alias),
        compiled=parse_compiled(compiled, QuantBenchSettings.recipes), crossover_batches=parse_batches(crossover_batches))
    run_bench("quant", settings, out, as_json)


@app.command("lcm")
def bench_lcm(
    prompts: int = typer.Option(240, min=6, max=10000, help="Held-out prompts of all kinds."),
    single_prompts: int = typer.Option(200, min=2, max=10000, help="Held-out single-object prompts (acceptance)."),
    seed: int = SEED,
    model: Optional[Path] = typer.Option(None, help="A student folder written by `effigy zoo train t2i-shapes-lcm "
                                         "--out DIR` (default: the shipped t2i-shapes-lcm)."),
    weights_alias: Optional[Path] = typer.Option(None, "--weights", hidden=True),
    name: Optional[str] = typer.Option(None, help="Results file name (default lcm_t2i_shapes_lcm)."),
    out: Optional[Path] = RESULTS_OUT,
    as_json: bool = JSON,
) -> None:
    """The few-step student t2i-shapes-lcm at 1, 2 and 4 steps against its teacher at 20 steps."""
    from effigy.bench.lcm import LCMBenchSettings

    weights = deprecated(weights_alias, "--weights DIR", "--model DIR", model)
    if weights is not None and not (weights / "MANIFEST.json").is_file():
        raise EffigyError(f"--model {weights} holds no MANIFEST.json; pass the --out folder of `effigy zoo train`.")
    settings = LCMBenchSettings(prompts=prompts, single_prompts=single_prompts, seed=seed,
                                student_weights=None if weights is None else str(weights))
    run_bench("lcm", settings, out, as_json, file_name=name)


@app.command("mixdq")
def bench_mixdq(
    samples_per_class: int = typer.Option(20, min=2, max=1000, help="Held-out prompts = 10 x this."),
    steps: int = typer.Option(4, min=1, max=8, help="LCM steps of the few-step student."),
    seed: int = SEED,
    average_bits: Optional[float] = typer.Option(None, help="Average weight bits for mixdq-w4a8 instead of the three "
                                                 "recipes' own targets (8, 4, 3.66).", callback=finite),
    bits_alias: Optional[float] = typer.Option(None, "--bits", hidden=True, callback=finite),
    ablations: bool = typer.Option(True, help="Also run MixDQ W4A8 without BOS handling and with one metric."),
    memory: bool = typer.Option(True, help="Peak RSS in a fresh process per variant (~10 s each)."),
    bootstrap_resamples: int = typer.Option(1000, min=100),
    compiled: str = typer.Option("vidit-q-w8a8,mixdq-w8a8,mixdq-w4a8", help=COMPILED_HELP),
    crossover_batches: str = typer.Option(CROSSOVER_DEFAULT, help=CROSSOVER_HELP),
    out: Optional[Path] = RESULTS_OUT,
    as_json: bool = JSON,
) -> None:
    """MixDQ on the few-step student t2i-shapes-lcm against uniform, ViDiT-Q and a peer, with ablations; eager
    and (FP, W8A8, MixDQ W8A8 / W4A8) compiled."""
    from effigy.bench.mixdq import MixDQBenchSettings
    from effigy.models.zoo import load_zoo_model
    from effigy.workflows.mixed_precision import check_target

    bits = deprecated(bits_alias, "--bits", "--average-bits", average_bits)
    settings = MixDQBenchSettings(samples_per_class=samples_per_class, steps=steps, seed=seed, ablations=ablations,
                                  measure_memory=memory, bootstrap_resamples=bootstrap_resamples, mixdq_bits=bits,
                                  compiled=parse_compiled(compiled, MixDQBenchSettings.recipes),
                                  crossover_batches=parse_batches(crossover_batches))
    if bits is not None:
        check_target(load_zoo_model(settings.model)[0], "mixdq-w4a8", bits)  # before the analysis, not after it
        settings = MixDQBenchSettings(**{**settings.__dict__, "recipes": tuple(
            r for r in settings.recipes if r not in ("mixdq-w8a8", "mixdq-w3.66a16"))})
    run_bench("mixdq", settings, out, as_json)


@app.command("kernels")
def bench_kernels(seed: int = SEED,
                  out: Optional[Path] = RESULTS_OUT,
                  as_json: bool = JSON) -> None:
    """fp32 vs torch._int_mm vs fbgemm int8 GEMM on the digits DiT's layer shapes (exactness checked)."""
    from effigy.bench.kernels import KernelBenchSettings

    run_bench("kernels", KernelBenchSettings(seed=seed), out, as_json)


@app.command("scale")
def bench_scale(
    architecture: str = typer.Option("dit-xl-2", help="dit-xl-2 (class-conditional DiT), pixart-alpha (its trunk "
                                     "with cross-attention to 120 text tokens) or dit-s-2."),
    tokens: str = typer.Option("256", help="Token counts of the model calls (square numbers: 256, 1024, 4096; '' "
                               "skips the section)."),
    layer_tokens: str = typer.Option("64,256,1024,4096", help="Token counts of the single-layer section ('' skips)."),
    kv_lengths: str = typer.Option("2048,8192", help="Context lengths of the KV section on SmolLM2 ('' skips it)."),
    attention_tokens: Optional[int] = typer.Option(None, min=64, max=65536, help="Token count of the attention "
                                                   "section (DiTFastAttn fixed plans vs full attention and "
                                                   "FirstBlockCache; default: skipped)."),
    attention_blocks: int = typer.Option(2, min=2, max=64, help="Blocks the attention section runs."),
    attention_steps: int = typer.Option(8, min=2, max=100, help="Denoising calls of the attention section."),
    var_depth: Optional[int] = typer.Option(None, min=2, max=36, help="LiteVAR section: a random VAR-d<N> (N layers "
                                            "of N heads of 64; 10 scales, 680 tokens), dense vs MDWA, ASC and W8A8 "
                                            "compiled (default: skipped)."),
    variants: str = typer.Option("", help="Comma-separated subset of the model section's variants (default: all "
                                 "that run fast on this CPU)."),
    repeats: int = typer.Option(3, min=1, max=50),
    memory: bool = typer.Option(True, help="Peak RSS in a fresh process per variant."),
    seed: int = SEED,
    out: Optional[Path] = RESULTS_OUT,
    as_json: bool = JSON,
) -> None:
    """The recipes at DiT-XL/2 or PixArt-alpha size (random weights): speed, bytes held and peak RSS; KV caches at
    2k-32k; DiTFastAttn plans at thousands of tokens beside full attention and FirstBlockCache (--attention-tokens);
    LiteVAR on a VAR-d16-sized model (--var-depth 16)."""
    from effigy.bench.scale import ARCHITECTURES, ScaleBenchSettings, chosen_variants
    from effigy.bench.scale_attention import AttentionScaleSettings
    from effigy.bench.scale_kv import KVScaleSettings
    from effigy.bench.scale_litevar import LiteVARScaleSettings
    from effigy.bench.scale_report import ScaleRun

    settings = ScaleBenchSettings(architecture=check_choice(architecture, ARCHITECTURES, "--architecture"),
                                  tokens=parse_counts(tokens, "--tokens"), repeats=repeats,
                                  measure_memory=memory, seed=seed, variants=chosen_variants(variants))
    lengths = parse_counts(kv_lengths, "--kv-lengths")
    kv = KVScaleSettings(lengths=lengths, seed=seed) if lengths else None
    layers = parse_counts(layer_tokens, "--layer-tokens")
    if not (settings.tokens or layers or lengths or attention_tokens or var_depth):
        raise EffigyError("nothing to run: give --tokens, --layer-tokens, --kv-lengths, --attention-tokens or "
                          "--var-depth.")
    attention = None if attention_tokens is None else AttentionScaleSettings(
        architecture=architecture, tokens=square_tokens(attention_tokens, "--attention-tokens"),
        blocks=attention_blocks, steps=attention_steps, repeats=repeats, seed=seed)
    litevar = None if var_depth is None else LiteVARScaleSettings(depth=var_depth, repeats=repeats,
                                                                        memory=memory, seed=seed)
    run_bench("scale", ScaleRun(settings, layers, kv, attention, litevar), out, as_json)


@app.command("t2i-scorers")
def bench_t2i_scorers(
    prompts: int = typer.Option(60, min=6, max=10000),
    steps: int = typer.Option(20, min=1, max=50),
    guidance: float = typer.Option(4.0, min=0.0, callback=finite),
    seed: int = SEED,
    out: Optional[Path] = RESULTS_OUT,
    as_json: bool = JSON,
) -> None:
    """Do the attribute checker and the CLIP-score stand-in rank degraded variants alike (Kendall tau)?"""
    from effigy.bench.t2i_scorers import ScorerAgreementSettings

    run_bench("t2i-scorers", ScorerAgreementSettings(prompts, steps, guidance, seed), out, as_json)


@app.command("fastattn")
def bench_fastattn(
    model: str = typer.Option("dit-digits", help="Shipped model: dit-digits or t2i-shapes."),
    thresholds: str = typer.Option("0.025,0.05,0.1,0.2,0.4", help="DiTFastAttn search thresholds to sweep."),
    window: float = typer.Option(0.125, help="Window as a fraction of the token count.", callback=finite),
    samples_per_class: int = typer.Option(10, min=1, max=1000),
    steps: int = typer.Option(20, min=2, max=50),
    seed: int = SEED,
    peers: bool = typer.Option(True, help="Also run diffusers' PAB, FasterCache, FirstBlockCache, TaylorSeer and "
                               "MagCache hooks."),
    subset: Optional[Path] = typer.Option(None, help=SUBSET_HELP),
    prompts_alias: Optional[str] = typer.Option(None, "--prompts", hidden=True),
    out: Optional[Path] = RESULTS_OUT,
    as_json: bool = JSON,
) -> None:
    """DiTFastAttn threshold sweep vs diffusers cache hooks: attention FLOPs, latency, quality vs FP."""
    from effigy.bench.fastattn import FastAttnBenchSettings

    settings = FastAttnBenchSettings(model=model, thresholds=parse_floats(thresholds, "--thresholds"),
                                     window_fraction=window, samples_per_class=samples_per_class, steps=steps,
                                     seed=seed, peers=FastAttnBenchSettings.peers if peers else (),
                                     prompts=checked_subset(subset, prompts_alias))
    run_bench("fastattn", settings, out, as_json)


@app.command("litevar")
def bench_litevar(
    coverages: str = typer.Option("0.95,0.8", help="MDWA attention-mass coverages (the first is also run with ASC)."),
    asc_threshold: float = typer.Option(1.0, min=0.0, callback=finite, help="ASC shares a (layer, scale) whose CFG "
                                        "halves' attention outputs differ by at most this (relative L1; the default "
                                        "was chosen on a validation run: benchmarks/scripts/litevar_plan_sweep.py)."),
    recipes: str = typer.Option(",".join(("litevar-w8a8", "litevar-w6a6", "litevar-w4a8")),
                                help="LiteVAR quantization recipes to compare."),
    fastvar_keep: str = typer.Option("0.5,0.25", help="FastVAR peer: kept shares of the last scale's tokens."),
    samples_per_class: int = typer.Option(50, min=2, max=1000),
    guidance: float = typer.Option(3.0, min=0.0, max=20.0, callback=finite, help="CFG at the last scale."),
    seed: int = SEED,
    memory: bool = typer.Option(True, help="Peak RSS of FP and each quantized model in a fresh process."),
    compare_dit: bool = typer.Option(True, help="Also put the digits DiT beside the VAR (same labels and judges)."),
    dit_alias: Optional[bool] = typer.Option(None, "--dit/--no-dit", hidden=True),
    out: Optional[Path] = RESULTS_OUT,
    as_json: bool = JSON,
) -> None:
    """LiteVAR on the digits VAR: MDWA, ASC, quantization, all combined, and FastVAR pruning, vs FP."""
    from effigy.bench.litevar import LiteVARBenchSettings
    from effigy.recipes import LITEVAR_RECIPES

    chosen = tuple(check_choice(r.strip(), LITEVAR_RECIPES, "--recipes") for r in recipes.split(",") if r.strip())
    keep = parse_shares(fastvar_keep, "--fastvar-keep") if fastvar_keep.strip() else ()
    cover = parse_shares(coverages, "--coverages")
    settings = LiteVARBenchSettings(coverages=cover, asc_threshold=asc_threshold, recipes=chosen, fastvar_keep=keep,
                                    samples_per_class=samples_per_class, guidance_scale=guidance, seed=seed,
                                    measure_memory=memory,
                                    compare_dit=deprecated(dit_alias, "--dit/--no-dit", "--compare-dit/--no-compare-dit",
                                                           compare_dit))
    run_bench("litevar", settings, out, as_json)


@app.command("kvquant")
def bench_kvquant(
    trace_tokens: int = typer.Option(2048, min=32, max=131072, help="Length of each FP chain-of-thought trace."),
    prompts: int = typer.Option(2, min=1, max=4),
    average_bits: str = typer.Option("4,6", help="Budgets as average stored bits per KV element (scales, fp16 "
                                     "window and sink included)."),
    agreement_tokens: int = typer.Option(128, min=8, max=131072),
    seed: int = SEED,
    model: str = typer.Option("smollm2", help="Causal LM: smollm2 (shipped), a .gguf file or a local transformers "
                              "folder."),
    out: Optional[Path] = RESULTS_OUT,
    as_json: bool = JSON,
) -> None:
    """PM-KVQ vs FP16, RTN, KIVI-style and its ablations at equal KV memory on a causal LM (SmolLM2-135M)."""
    from effigy.bench.kvquant import KVBenchSettings

    settings = KVBenchSettings(trace_tokens=trace_tokens, prompts=prompts, seed=seed, model=model,
                               average_bits=parse_floats(average_bits, "--average-bits"),
                               agreement_tokens=agreement_tokens)
    run_bench("kvquant", settings, out, as_json)



@app.command("flasheval")
def bench_flasheval(
    scores: Path = typer.Option(Path("benchmarks/results/flasheval/t2i-shapes/score_matrix.json"),
                                help="A score matrix: effigy's (`effigy flasheval build`), a CSV / NPZ [models x "
                                "prompts], a CSV / JSONL / Parquet table of model, prompt, metric, score rows, or a "
                                "folder of per-model JSON files (FlashEval's released tree too)."),
    matrix_alias: Optional[Path] = typer.Option(None, "--matrix", hidden=True),
    metric: Optional[str] = typer.Option(None, help="The metric to run (default: each of the matrix's); it names an "
                                         "external matrix's single table."),
    sizes: str = typer.Option("10,20,50,100,200,500", help="Subset sizes to compare the methods at."),
    splits: int = typer.Option(5, min=1, max=50, help="Seeded train / held-out model splits (seeds 0..N-1)."),
    search_seeds_alias: Optional[int] = typer.Option(None, "--search-seeds", hidden=True, min=1, max=50),
    split: Optional[Path] = typer.Option(None, help="A named split run beside the seeded ones: FlashEval's "
                                         "train_id.pth (inside its release) or a JSON {\"train\": [model names]}."),
    subset: Optional[Path] = typer.Option(None, help="A subset judged beside the methods on every split: FlashEval's "
                                          "released file (a JSON prompt with its id per line) or an effigy subset."),
    random_draws: int = typer.Option(200, min=10),
    rounds: int = typer.Option(8, min=1, max=100, help="FlashEval search rounds."),
    subsets: int = typer.Option(2000, min=10, max=1_000_000, help="Random subsets drawn per search round."),
    out: Optional[Path] = RESULTS_OUT,
    as_json: bool = JSON,
) -> None:
    """FlashEval vs random, stratified and Anchor Points subsets on held-out models: tau vs size, and the claim."""
    from effigy.bench.flasheval import FlashEvalBenchSettings, check_inputs

    scores = deprecated(matrix_alias, "--matrix", "--scores", scores)
    splits = deprecated(search_seeds_alias, "--search-seeds", "--splits", splits)
    size_list = parse_counts(sizes, "--sizes", allow_empty=False)
    settings = FlashEvalBenchSettings(matrix=str(scores), metric=metric, sizes=size_list, splits=splits,
                                      split_file=None if split is None else str(split),
                                      released=None if subset is None else str(subset), random_draws=random_draws,
                                      rounds=rounds, subsets=subsets,
                                      claim_size=50 if 50 in size_list else size_list[0])
    check_inputs(settings)  # a bad matrix, metric, split or subset fails before any folder is made
    run_bench("flasheval", settings, out, as_json)


@app.command("ada3d")
def bench_ada3d(
    keeps: str = typer.Option("", help="Ada3D keep shares as 3D/2D pairs, each a row; the first is the main one "
                              "(3D-only, 2D-only, not fine-tuned, random and distance rows use it). Default: the main "
                              "one chosen on validation frames from the sweep."),
    sweep_3d: str = typer.Option("0.3,0.4,0.5,0.6,0.7,0.8", help="3D keep shares of the speed-accuracy sweep."),
    sweep_2d: str = typer.Option("0.1,0.2,0.25,0.3,0.4,0.5", help="2D keep shares of the speed-accuracy sweep."),
    test_frames: int = typer.Option(100, min=2, max=100_000, help="Simulated test frames to detect."),
    val_frames: int = typer.Option(100, min=2, max=100_000, help="Simulated validation frames the keep shares are "
                                   "chosen on."),
    latency_frames: int = typer.Option(8, min=1, max=1000),
    seed: int = SEED,
    memory: bool = typer.Option(True, help="Peak RSS of each variant in a fresh process."),
    model: str = typer.Option("lidar-ada3d", help="The Ada3D model (lidar-ada3d, lidar-ada3d-spbn); its dense "
                              "detector is the one it was fine-tuned from, and lidar-centerpoint is a row of its own."),
    out: Optional[Path] = RESULTS_OUT,
    as_json: bool = JSON,
) -> None:
    """Ada3D on the lidar detector: keep shares chosen on validation, 3D / 2D alone, not fine-tuned, random and
    distance filtering, and the speed-accuracy sweep."""
    from effigy.bench.ada3d import Ada3DBenchSettings
    from effigy.cli._common import check_choice
    from effigy.models.zoo import ZOO

    check_choice(model, [n for n in ZOO.names("lidar") if "ada3d" in n], "--model")
    settings = Ada3DBenchSettings(ada3d=model, test_frames=test_frames, val_frames=val_frames,
                                  latency_frames=min(latency_frames, test_frames), keeps=parse_keep_pairs(keeps),
                                  sweep_3d=parse_shares(sweep_3d, "--sweep-3d"),
                                  sweep_2d=parse_shares(sweep_2d, "--sweep-2d"), seed=seed, measure_memory=memory)
    run_bench("ada3d", settings, out, as_json)


def parse_keep_pairs(text: str) -> tuple[tuple[float, float], ...]:
    """``"0.6/0.3,0.8/0.5"`` -> ((0.6, 0.3), (0.8, 0.5)), each share in (0, 1], or one clear error; empty: none."""
    pairs = []
    for item in (i.strip() for i in text.split(",") if i.strip()):
        parts = item.split("/")
        shares = parse_shares(item.replace("/", ","), "--keeps") if len(parts) == 2 else ()
        if len(shares) != 2:
            raise typer.BadParameter(f"{item!r}: give each pair as 3D/2D shares, e.g. 0.6/0.3.", param_hint="--keeps")
        pairs.append(tuple(shares))
    return tuple(pairs)


@app.command("fas")
def bench_fas(
    shots: str = typer.Option("5,10", help="Labelled target samples per class the adaptors get, comma-separated."),
    draws: int = typer.Option(10, min=1, max=1000, help="Seeded draws of the target samples per setting."),
    seed: int = SEED,
    tent: bool = typer.Option(True, help="Also run TENT (updates the model's norms)."),
    out: Optional[Path] = RESULTS_OUT,
    as_json: bool = JSON,
) -> None:
    """Face anti-spoofing, leave-one-domain-out: OT adaptors (training-free, geodesic mixup, one-class) against
    no adaptation, T3A, linear mixup and TENT; the held-out real faces."""
    from effigy.bench.fas import FASBenchSettings
    from effigy.detect.fas.protocol import check_shots

    settings = FASBenchSettings(shots=parse_counts(shots, "--shots", allow_empty=False), draws=draws, seed=seed, tent=tent)
    for count in settings.shots:
        check_shots(count)
    run_bench("fas", settings, out, as_json)


@app.command("deepfake")
def bench_deepfake(
    seed: int = SEED,
    epsilon: float = typer.Option(2 / 255, min=1e-6, max=1.0, help="PGD's L-infinity budget.", callback=finite),
    captions: bool = typer.Option(True, help="Also measure the captions' noise rate (loads SmolLM2)."),
    explainer: bool = typer.Option(True, help="Also run the LLM-connected detector (loads SmolLM2)."),
    out: Optional[Path] = RESULTS_OUT,
    as_json: bool = JSON,
) -> None:
    """Deepfake detection: the AuthGuard-style encoder against cross-entropy alone and plain contrastive, on
    unseen forgery families and an unseen domain; held-out faces; AUC under PGD; caption noise."""
    from effigy.bench.deepfake import DeepfakeBenchSettings

    settings = DeepfakeBenchSettings(seed=seed, epsilon=epsilon, captions=captions, explainer=explainer)
    run_bench("deepfake", settings, out, as_json)


@app.command("robustness")
def bench_robustness(
    domains: Optional[str] = typer.Option(None, help="Capture domains to attack in, comma-separated (default: all)."),
    attempts: int = typer.Option(1, min=1, max=100, help="Attempts per test identity, attack and domain."),
    epsilon: float = typer.Option(8.0, min=0.5, max=64.0, callback=finite, help="Adversarial L-infinity budget, in 1/255 units."),
    seed: int = SEED,
    out: Optional[Path] = typer.Option(None, help="Results root: files go to <root>/robustness/fas-protonet/. "
                                       "Default: a fresh folder under runs/; the committed results use "
                                       "--out benchmarks/results."),
    as_json: bool = JSON,
) -> None:
    """Every attack of the taxonomy (presentation, adversarial noise, deepfake and digital-replay injection)
    against the passive model, its adaptors and the challenge-response verifier: APCER per attack, BPCER."""
    from effigy.detect.robustness.harness import HarnessSettings

    settings = HarnessSettings(domains=tuple(parse_domains(domains)), attempts_per_identity=attempts,
                               epsilon=epsilon / 255, seed=seed)
    run_bench("robustness", settings, out, as_json)


def demo(
    out: Path = typer.Option(Path("demo_out"), help="Folder for grid.png, report.md and results.json."),
    samples_per_class: int = typer.Option(20, min=2, max=1000, help="Samples per digit class for the quality metrics."),
    steps: int = typer.Option(20, min=1, max=200, help="DPM-Solver sampling steps."),
    seed: int = SEED,
    memory: bool = typer.Option(True, help="Measure peak memory in a fresh process per variant (~10 s each)."),
    compiled: str = typer.Option(COMPILED_DEFAULT, help=COMPILED_HELP),
    crossover_batches: str = typer.Option(CROSSOVER_DEFAULT, help=CROSSOVER_HELP),
    as_json: bool = JSON,
) -> None:
    """FP vs W8A8 and W4A8 quantized shipped digits DiT, eager and compiled: image grid, quality, bytes, memory,
    latency, and the batches at which compiled W8A8 keeps up with compiled FP.
    (The mixed-precision search and the peer-library row are in `effigy bench quant`.)"""
    from effigy.bench.quant import QuantBenchSettings

    recipes = ("naive-w8a8", "vidit-q-w8a8", "rtn-w4a8", "vidit-q-w4a8")
    settings = QuantBenchSettings(samples_per_class=samples_per_class, steps=steps, seed=seed, measure_memory=memory,
                                  recipes=recipes, peer=False, compiled=parse_compiled(compiled, recipes),
                                  crossover_batches=parse_batches(crossover_batches))
    run_bench("quant", settings, None, as_json, renames={"grid": "grid.png", "json": "results.json"},
              stem=writable_folder(out) / "report")
