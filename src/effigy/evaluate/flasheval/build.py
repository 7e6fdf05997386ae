"""Building a score matrix: every (variant, prompt shard) pair is one job, run in a process pool or on Ray.

Jobs are independent: each samples its shard's prompts from the shard's own seed (the same for every
variant, so variants are compared on the same noise) and scores them. A worker builds a variant's model
once and keeps it for that variant's other shards. Every finished job is written to the cache
(``<cache>/<variant>-<key>.safetensors``, the key hashing the variant, the shard's prompts, the seed and the
code version) before the next is collected, so an interrupted build resumes where it stopped.

Every worker runs torch on one thread, so the local pool and Ray give the same matrix bit for bit.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

import effigy
from effigy.errors import ScoreMatrixError
from effigy.evaluate.flasheval.matrix import ScoreMatrix
from effigy.evaluate.flasheval.variants import VariantBuilder, VariantSpec
from effigy.evaluate.measure import Progress, machine_facts, no_progress

log = logging.getLogger(__name__)
METRICS = ("adherence", "clip_score")
EXECUTORS = ("local", "ray")
CODE_VERSION = f"effigy {effigy.__version__}, score-matrix jobs v1"


@dataclass(frozen=True)
class MatrixPlan:
    """What a matrix is made of: the variants, and ``prompts`` prompts of ``split`` from the seeded world."""

    variants: tuple[VariantSpec, ...]
    prompts: int = 1000
    split: str = "heldout"
    seed: int = 0
    shard_size: int = 100

    def __post_init__(self) -> None:
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ScoreMatrixError("two variants share a name; every row of a score matrix needs its own.")
        if len(self.variants) < 2 or self.prompts < 2:
            raise ScoreMatrixError(f"a score matrix ranks at least two variants on at least two prompts, got "
                                   f"{len(self.variants)} x {self.prompts}.")
        if self.shard_size < 1:
            raise ScoreMatrixError(f"shard_size={self.shard_size}: a shard holds at least one prompt.")

    @property
    def shards(self) -> list[range]:
        return [range(s, min(s + self.shard_size, self.prompts)) for s in range(0, self.prompts, self.shard_size)]

    def scenes(self):
        from effigy.evaluate.t2i import prompt_set

        return prompt_set(self.prompts, self.split, self.seed)

    def shard_seed(self, shard: int) -> int:
        return self.seed + 1000 * shard

    def cache_key(self, variant: VariantSpec, shard: int) -> str:
        what = {"variant": variant_record(variant), "prompts": [self.prompts, self.split, self.seed, self.shards[shard].start,
                                                           self.shards[shard].stop], "code": CODE_VERSION}
        return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:16]

    def cache_file(self, cache: Path, variant: VariantSpec, shard: int) -> Path:
        slug = re.sub(r"[^A-Za-z0-9.=-]+", "_", variant.name)
        return cache / f"{slug}-shard{shard:03d}-{self.cache_key(variant, shard)}.safetensors"


# one builder per worker process: variants' models outlive the job that built them
_BUILDER: VariantBuilder | None = None


def _worker_init() -> None:
    import torch

    torch.set_num_threads(1)


def score_shard(plan: MatrixPlan, variant: int, shard: int) -> dict[str, np.ndarray]:
    """One job: the variant's images for the shard's prompts, scored per prompt."""
    from effigy.evaluate.t2i import score_images

    global _BUILDER
    if _BUILDER is None:
        _BUILDER = VariantBuilder()
    spec = plan.variants[variant]
    scenes = plan.scenes()[plan.shards[shard].start : plan.shards[shard].stop]
    images = _BUILDER.sampler_for(spec)(scenes, plan.shard_seed(shard))
    rows = score_images(_BUILDER.suite(spec.generator), scenes, images)  # the judges are shared
    return {m: np.array([r[m] for r in rows], dtype=np.float64) for m in METRICS}


def build_matrix(plan: MatrixPlan, cache: str | Path, executor: str = "local", workers: int = 2,
                 progress: Progress = no_progress) -> ScoreMatrix:
    """The plan's score matrix, from the cache where jobs are done and by ``executor`` where not.

    Args:
        plan: the variants and prompts.
        cache: the folder of finished jobs (created; an interrupted build resumes from it).
        executor: ``local`` (a process pool; ``workers=0`` runs in this process) or ``ray`` (a Ray cluster:
            ``RAY_ADDRESS`` if set, else a local one with ``workers`` CPUs).
        workers: worker processes.
    Returns:
        The matrix with one table per metric and its provenance.
    """
    if executor not in EXECUTORS:
        raise ScoreMatrixError(f"executor {executor!r} is unknown: choose one of {', '.join(EXECUTORS)}.")
    cache = Path(cache)
    if cache.exists() and not cache.is_dir():
        raise ScoreMatrixError(f"--cache {cache} is not a folder; pass a folder for finished jobs.")
    cache.mkdir(parents=True, exist_ok=True)
    todo = [(v, s) for v in range(len(plan.variants)) for s in range(len(plan.shards))
            if _cached_job(plan.cache_file(cache, plan.variants[v], s), len(plan.shards[s])) is None]
    log.info("score matrix: %d of %d jobs cached, %d to run", len(plan.variants) * len(plan.shards) - len(todo),
             len(plan.variants) * len(plan.shards), len(todo))
    advance = progress("scoring (variant, shard) jobs", len(todo))
    runner = _run_on_ray if executor == "ray" else _run_locally
    for (variant, shard), scores in runner(plan, todo, workers):
        _write_job(plan.cache_file(cache, plan.variants[variant], shard), scores)
        advance()
    return _assemble(plan, cache, executor)


def _run_locally(plan: MatrixPlan, jobs: list[tuple[int, int]], workers: int) -> Iterator:
    if workers == 0:
        for job in jobs:
            yield job, score_shard(plan, *job)
        return
    import multiprocessing

    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_worker_init) as pool:
        futures = {pool.submit(score_shard, plan, *job): job for job in jobs}
        for future in as_completed(futures):
            yield futures[future], future.result()


def _run_on_ray(plan: MatrixPlan, jobs: list[tuple[int, int]], workers: int) -> Iterator:
    from effigy.cluster import ray_session

    with ray_session(workers) as ray:
        task = ray.remote(num_cpus=1)(_ray_job)
        pending = {task.remote(plan, *job): job for job in jobs}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            job = pending.pop(done[0])
            yield job, ray.get(done[0])


def _ray_job(plan: MatrixPlan, variant: int, shard: int) -> dict[str, np.ndarray]:
    _worker_init()
    return score_shard(plan, variant, shard)


def _write_job(path: Path, scores: dict[str, np.ndarray]) -> None:
    from safetensors.numpy import save_file

    from effigy.checkpoint.files import replaced_atomically

    with replaced_atomically(path) as partial:  # a job is cached whole or not at all
        save_file(scores, str(partial))


def _cached_job(path: Path, prompts: int) -> dict[str, np.ndarray] | None:
    """A finished job's scores, or None when it is missing or damaged (truncated, other shapes, NaN): a damaged
    job is logged and run again rather than trusted or crashed on."""
    from safetensors.numpy import load_file

    if not path.is_file():
        return None
    try:
        job = load_file(str(path))
    except Exception as exc:  # safetensors' own error types for a truncated or foreign file
        log.warning("cached job %s is unreadable (%s); running it again", path, type(exc).__name__)
        return None
    if not all(m in job and job[m].shape == (prompts,) and np.isfinite(job[m]).all() for m in METRICS):
        log.warning("cached job %s does not hold %d finite scores per metric; running it again", path, prompts)
        return None
    return job


def _assemble(plan: MatrixPlan, cache: Path, executor: str) -> ScoreMatrix:
    tables = {m: np.zeros((len(plan.variants), plan.prompts)) for m in METRICS}
    for v, spec in enumerate(plan.variants):
        for s, shard in enumerate(plan.shards):
            job = _cached_job(plan.cache_file(cache, spec, s), len(shard))
            if job is None:
                raise ScoreMatrixError(f"the cached job {plan.cache_file(cache, spec, s)} changed during the build; "
                                       "run the build again.")
            for m in METRICS:
                tables[m][v, shard.start : shard.stop] = job[m]
    prompts = [{"id": f"{plan.split}-{plan.seed}-{i:05d}", "text": scene.caption, "kind": scene.kind}
               for i, scene in enumerate(plan.scenes())]
    provenance = {"prompt_set": {"count": plan.prompts, "split": plan.split, "seed": plan.seed},
                  "shard_size": plan.shard_size, "code_version": CODE_VERSION, "executor": executor,
                  "machine": machine_facts()}
    return ScoreMatrix(tables, [variant_record(v) for v in plan.variants], prompts, provenance)


def variant_record(spec: VariantSpec) -> dict:
    """The variant's definition, with the sha256 of its allocation file: the file may be rewritten later."""
    from effigy.checkpoint.files import sha256_of

    record = spec.to_dict()
    if spec.allocation is not None and Path(spec.allocation).is_file():
        record["allocation_sha256"] = sha256_of(Path(spec.allocation))
    return record


def variants_from_file(path: str | Path) -> list[VariantSpec]:
    """Variant definitions from a JSON list (the ``variants`` of a saved matrix, or a list a user writes)."""
    from effigy.serialize import read_json_file

    data = read_json_file(path, "a JSON list of variant definitions (or a score matrix's .json)", ScoreMatrixError)
    items: Iterable = data.get("variants", []) if isinstance(data, dict) else data
    if not isinstance(items, list) or not items:
        raise ScoreMatrixError(f"{path}: expected a non-empty JSON list of variant definitions.")
    return [VariantSpec.from_dict({k: v for k, v in item.items() if k != "allocation_sha256"} if "format" in item
                                  else {"format": VariantSpec.FORMAT, **item}) for item in items]

