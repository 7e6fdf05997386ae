"""Text-to-image evaluation on the shapes world: per-prompt adherence (attribute checker), CLIP-score
stand-in, and FID on the checker's features, for any variant of the shipped generator.

Per-prompt scores are the unit: a row per prompt is what FlashEval and the sensitivity analyses of
the quantization methods consume, so every score is kept, not only the means.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from effigy.evaluate.measure import Progress, no_progress
from effigy.metrics import fid_from_features
from effigy.metrics.adherence import adherence
from effigy.metrics.stats import paired_mean_difference
from effigy.models.encoders.text_encoder import MiniLMTextEncoder, sentence_features
from effigy.models.generators import t2i_shapes, t2i_shapes_lcm
from effigy.models.judges import clip_standin, shapes_checker
from effigy.models.zoo import load_zoo_model
from effigy.nn.config import DEFAULT_IGNORE
from effigy.nn.replace import find_targets
from effigy.worlds.shapes import KINDS, Scene, ShapesWorld, render


@dataclass
class T2ISuite:
    """The generator and both judges, loaded once."""

    transformer: torch.nn.Module
    config: t2i_shapes.T2IShapesConfig
    bank: t2i_shapes.CaptionBank
    checker: shapes_checker.ShapesChecker
    clip_head: clip_standin.AlignmentHead
    clip_config: clip_standin.AlignConfig
    backbone: torch.nn.Module
    text_cache: dict[str, torch.Tensor] = field(default_factory=dict)

    @classmethod
    def load(cls, generator: str = "t2i-shapes") -> "T2ISuite":
        """The judges around a shipped shapes generator: ``t2i-shapes`` or its few-step ``t2i-shapes-lcm``."""
        transformer, config = load_zoo_model(generator)
        checker, _ = load_zoo_model("shapes-checker")
        head, clip_config = load_zoo_model("shapes-clip")
        return cls(transformer, config, t2i_shapes.CaptionBank(MiniLMTextEncoder()), checker, head, clip_config,
                   clip_standin.load_efficientnet_lite0())

    def with_generator(self, name: str, weights_dir: Path | None = None) -> "T2ISuite":
        """The same judges and caption cache around another zoo generator (the teacher's student), shipped or
        trained into ``weights_dir`` by ``effigy zoo train``."""
        transformer, config = load_zoo_model(name) if weights_dir is None else load_zoo_model(name, weights_dir)
        return replace(self, transformer=transformer, config=config)

    def with_transformer(self, transformer: torch.nn.Module) -> "T2ISuite":
        """The same suite (judges, caption cache) around another variant of the generator."""
        return replace(self, transformer=transformer)

    @property
    def few_step(self) -> bool:
        """A consistency-distilled student: LCM sampling, guidance in the weights (one branch per call)."""
        return isinstance(self.config, t2i_shapes_lcm.T2IShapesLCMConfig)

    def sample(self, captions: list[str], steps: int, guidance: float, seed: int,
               step_callback: Callable[[int], None] | None = None, sampler: str = "dpm-solver++") -> torch.Tensor:
        """The generator's own sampler: ``sampler`` (DPM-Solver++ by default) with CFG for the teacher,
        LCMScheduler for the student (``guidance`` and ``sampler`` are then ignored: distilled in)."""
        if self.few_step:
            return t2i_shapes_lcm.sample(self.transformer, self.config, self.bank, captions, steps, seed, step_callback)
        return t2i_shapes.sample(self.transformer, self.config, self.bank, captions, steps, guidance, seed,
                                 step_callback=step_callback, sampler=sampler)

    def sentence_features(self, captions: list[str]) -> torch.Tensor:
        encoded = self.bank.encode(captions)
        return sentence_features(encoded["encoder_hidden_states"], encoded["encoder_attention_mask"])


def prompt_set(count: int, split: str = "heldout", seed: int = 0, kinds: tuple[str, ...] = KINDS) -> list[Scene]:
    """``count`` prompts cycling through ``kinds``, from the seeded world."""
    world = ShapesWorld(seed=seed + 100, split=split)
    return [world.sample_scene(kinds[i % len(kinds)]) for i in range(count)]


@torch.no_grad()
def check_adherence(suite: T2ISuite, scenes: list[Scene], images: torch.Tensor) -> list:
    """The attribute checker's reading of each image against its scene's caption."""
    detections = shapes_checker.detect(suite.checker, images)
    return [adherence(scene, shapes_checker.as_objects(found)) for scene, found in zip(scenes, detections)]


@torch.no_grad()
def score_images(suite: T2ISuite, scenes: list[Scene], images: torch.Tensor) -> list[dict]:
    """One row per prompt: adherence with its facts, and the CLIP-score stand-in."""
    feats = clip_standin.image_features(suite.backbone, images, suite.clip_config.image_size)
    clip = clip_standin.clip_scores(suite.clip_head, feats, suite.sentence_features([s.caption for s in scenes]))
    return [{"caption": scene.caption, "kind": scene.kind, "adherence": result.score, "facts": result.facts,
             "clip_score": score}
            for scene, result, score in zip(scenes, check_adherence(suite, scenes, images), clip.tolist())]


@torch.no_grad()
def checker_features(checker: shapes_checker.ShapesChecker, images: torch.Tensor) -> torch.Tensor:
    """Pooled activations before the checker's last layer: the world's own FID feature space."""
    return checker.net[:-1](images).mean(dim=(2, 3))


def generate(suite: T2ISuite, scenes: list[Scene], steps: int, guidance: float, seed: int,
             batch_size: int = 50, advance: Callable[[], None] = lambda: None, sampler: str = "dpm-solver++"
             ) -> torch.Tensor:
    chunks = []
    for i, start in enumerate(range(0, len(scenes), batch_size)):
        captions = [s.caption for s in scenes[start : start + batch_size]]
        chunks.append(suite.sample(captions, steps, guidance, seed + i, step_callback=lambda _s: advance(),
                                   sampler=sampler))
    return torch.cat(chunks)


def summarize(rows: list[dict]) -> dict:
    summary = {"adherence": _mean([r["adherence"] for r in rows]), "clip_score": _mean([r["clip_score"] for r in rows])}
    for kind in KINDS:
        of_kind = [r for r in rows if r["kind"] == kind]
        if not of_kind:
            continue
        summary[f"adherence_{kind}"] = _mean([r["adherence"] for r in of_kind])
        for fact in of_kind[0]["facts"]:
            summary[f"{kind}: {fact}"] = _mean([float(r["facts"][fact]) for r in of_kind])
    return summary


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def reference_images(scenes: list[Scene], size: int = 32) -> torch.Tensor:
    return t2i_shapes.images_to_tensor([render(s, size) for s in scenes])


def run_t2i_eval(suite: T2ISuite, prompts: int, steps: int, guidance: float, seed: int, split: str = "heldout",
                 progress: Progress = no_progress) -> dict:
    scenes = prompt_set(prompts, split, seed)
    advance = progress("generating", steps * -(-len(scenes) // 50))
    images = generate(suite, scenes, steps, guidance, seed, advance=advance)
    rows = score_images(suite, scenes, images)
    fid = fid_from_features(checker_features(suite.checker, images), checker_features(suite.checker, reference_images(scenes)))
    summary = {**summarize(rows), **chance_adherence(suite, scenes, images, rows), "fid_features": fid}
    return {"rows": rows, "summary": summary, "images": images, "scenes": scenes}


def chance_adherence(suite: T2ISuite, scenes: list[Scene], images: torch.Tensor, rows: list[dict]) -> dict:
    """Adherence of each image to the caption of the next prompt of its kind: the chance level that
    "above chance" is measured against, on this prompt set's own mix of colours and shapes, and the
    paired 95% bootstrap interval of (true captions - chance)."""
    chance = {}
    for kind in KINDS:
        idx = [i for i, s in enumerate(scenes) if s.kind == kind]
        if len(idx) < 2:
            continue
        shuffled = [r.score for r in check_adherence(suite, [scenes[j] for j in idx[1:] + idx[:1]], images[idx])]
        above = paired_mean_difference(torch.tensor([rows[i]["adherence"] for i in idx]), torch.tensor(shuffled))
        chance[f"adherence_{kind} (shuffled captions)"] = _mean(shuffled)
        chance[f"adherence_{kind} above chance (95% interval)"] = f"{above.value:+.3f} [{above.low:+.3f}, {above.high:+.3f}]"
    return chance


# Degraded variants, from mild to severe. Model variants (what the scorers exist to rank: fewer steps,
# weaker guidance, noise added to the weights as quantization adds it) and image corruptions (pixel
# noise added to finished samples), kept apart because an attribute checker reads objects through
# pixel noise by design while an image-feature score does not.
DEGRADATIONS: dict[str, dict] = {
    "reference": {},
    "steps 10": {"steps": 10}, "steps 5": {"steps": 5}, "steps 3": {"steps": 3}, "steps 2": {"steps": 2},
    "guidance 2": {"guidance": 2.0}, "guidance 1": {"guidance": 1.0}, "guidance 0": {"guidance": 0.0},
    # 0.1 is about the error of 4-bit per-channel weights; 0.25 and 0.5 mirror the pixel-noise levels
    "weight noise 0.1": {"weight_noise": 0.1}, "weight noise 0.25": {"weight_noise": 0.25},
    "weight noise 0.5": {"weight_noise": 0.5},
    "pixel noise 0.1": {"noise": 0.1}, "pixel noise 0.25": {"noise": 0.25}, "pixel noise 0.5": {"noise": 0.5},
}


def degradation_kind(change: dict) -> str:
    return "image" if "noise" in change else "model"


@torch.no_grad()
def with_weight_noise(model: nn.Module, relative_std: float, seed: int) -> nn.Module:
    """A copy of ``model`` whose quantizable linears (the layers effigy's recipes quantize) carry seeded
    Gaussian noise of ``relative_std`` times each output channel's weight RMS: the kind of error that
    weight quantization adds, as a model variant to rank."""
    noisy = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(seed)
    for linear in find_targets(noisy, ("*",), DEFAULT_IGNORE).values():
        rms = linear.weight.pow(2).mean(dim=1, keepdim=True).sqrt()
        linear.weight.add_(torch.randn(linear.weight.shape, generator=generator) * relative_std * rms)
    return noisy


def run_scorer_agreement(suite: T2ISuite, prompts: int, steps: int, guidance: float, seed: int,
                         progress: Progress = no_progress) -> dict:
    """Mean adherence and mean CLIP score for each degraded variant, and their Kendall tau: do the two
    scorers rank variants alike? ``kendall_tau`` is over the model variants (reference included);
    ``kendall_tau_all`` adds the image corruptions."""
    scenes = prompt_set(prompts, "heldout", seed)
    advance = progress("variants", len(DEGRADATIONS))
    rows = []
    for name, change in DEGRADATIONS.items():
        variant = suite
        if "weight_noise" in change:
            variant = suite.with_transformer(with_weight_noise(suite.transformer, change["weight_noise"], seed))
        images = generate(variant, scenes, change.get("steps", steps), change.get("guidance", guidance), seed)
        if "noise" in change:
            noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(seed)) * change["noise"]
            images = (images + noise).clamp(-1, 1)
        rows.append({"variant": name, "kind": degradation_kind(change), **summarize(score_images(suite, scenes, images))})
        advance()
    tau, p_value = _kendall([r for r in rows if r["kind"] == "model"])
    tau_all, p_all = _kendall(rows)
    return {"rows": rows, "kendall_tau": tau, "p_value": p_value, "kendall_tau_all": tau_all, "p_value_all": p_all}


def _kendall(rows: list[dict]) -> tuple[float, float]:
    from scipy.stats import kendalltau

    tau, p_value = kendalltau([r["adherence"] for r in rows], [r["clip_score"] for r in rows])
    return float(tau), float(p_value)
