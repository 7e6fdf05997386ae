"""Explained verdicts through a language model, as AuthGuard connects its encoder to an LLM (LLaVA-style).

The frozen deepfake encoder's feature map (2x2 cells of a 64x64 face), its pooled feature and its own fake
logit become six visual tokens; a two-layer projector maps the features (a linear one the logit) into
SmolLM2-135M-Instruct's embedding space, in front of the question "Is this face real or fake, and why?". The
projector and a LoRA (peft) on the LLM's query and value projections are trained, on answers built from each
training image's metadata ("Fake. The whole face is ..."); the encoder and the LLM's own weights stay as
shipped. The verdict is the LLM's choice between its answer's two possible first words ("Real" or "Fake", by
their logits, so every answer has one); the explanation is the greedy continuation, judged by whether it names
the true region and an artifact of the true family (``captions.faithful``).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from effigy.detect.batches import map_face_batches
from effigy.errors import ModelError
from effigy.models.config import TrainConfig
from effigy.models.encoders.image_encoder import IMAGE_FEATURES
from effigy.models.training_state import training_step, warmup_cosine

QUESTION = "Is this face real or fake, and why?"
LLM_HIDDEN = 576  # SmolLM2-135M's embedding width
VISUAL_TOKENS = 6  # 2x2 feature-map cells, the pooled feature and the encoder's fake logit
VERDICTS = ("Real", "Fake")  # an answer's first word; the LLM chooses between their first tokens
ANSWERS = {
    ("real", ""): "Real. Skin, light and edges agree everywhere, as in an untouched photo.",
    ("sbi", "face"): "Fake. The whole face is blended with a shifted, recoloured copy of itself: a blending "
                     "boundary and a colour mismatch.",
    ("swap", "face"): "Fake. The whole face is another person's face blended in, with a seam at the boundary.",
    ("reenact", "mouth"): "Fake. The mouth is warped: stretched and shifted against the rest of the face.",
    ("reenact", "eyes"): "Fake. The eyes are warped: stretched and shifted against the rest of the face.",
    ("upsample", "face"): "Fake. The whole face shows a checkerboard grid and a periodic pattern from a "
                          "generator's upsampling.",
    ("synthetic", "face"): "Fake. The whole face is generated: smooth, averaged features of no real person.",
}


@dataclass
class ExplainerConfig(TrainConfig):
    """The projector, the LLM's LoRA and their training (the encoder and the LLM's own weights stay as shipped).

    Args:
        encoder: the zoo's deepfake encoder whose features the LLM reads.
        examples: training images drawn (seeded) from the encoder's training set.
        lora_rank: rank of the LoRA (peft) on SmolLM2's query and value projections; 0 trains the projector only.
        lora_lr_scale: the LoRA's learning rate as a multiple of ``learning_rate``.
    """

    encoder: str = "deepfake-authguard"
    examples: int = 2400
    train_steps: int = 300
    batch_size: int = 8
    learning_rate: float = 1e-3
    lora_rank: int = 8
    lora_alpha: float = 16.0
    lora_lr_scale: float = 0.2
    max_new_tokens: int = 32
    seed: int = 0


LLM_LAYERS = 30  # SmolLM2-135M's decoder layers
LORA_TARGETS = {"q_proj": (LLM_HIDDEN, LLM_HIDDEN), "v_proj": (LLM_HIDDEN, 192)}  # (in, out) of each layer's


def lora_shapes(rank: int) -> dict[str, tuple[int, int]]:
    """peft's state-dict name -> shape of every LoRA matrix on SmolLM2-135M's query and value projections."""
    shapes = {}
    for layer in range(LLM_LAYERS):
        for target, (fan_in, fan_out) in LORA_TARGETS.items():
            stem = f"model.layers.{layer}.self_attn.{target}"
            shapes[f"{stem}.lora_A.weight"], shapes[f"{stem}.lora_B.weight"] = (rank, fan_in), (fan_out, rank)
    return shapes


@dataclass
class Visual:
    """What the LLM is shown of a batch of images: the encoder's feature tokens [N, cells + 1, 1280] (feature-map
    cells and their mean) and its fake logits [N] (the expert's own reading, as detectors that explain through
    an LLM hand it over); indexable by rows like a tensor."""

    tokens: torch.Tensor
    logit: torch.Tensor

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, rows) -> Visual:
        return Visual(self.tokens[rows], self.logit[rows])


class VisualProjector(nn.Module):
    """LLaVA-1.5's projector (Linear, GELU, Linear) from encoder features to LLM embeddings, a linear map of the
    encoder's logit to one more token, and the LLM's LoRA matrices (A as peft starts it, B at zero), which
    :func:`attach_lora` lends to the LLM, so that one file holds everything the explainer trained."""

    def __init__(self, config: ExplainerConfig) -> None:
        super().__init__()
        self.config = config
        self.net = nn.Sequential(nn.Linear(IMAGE_FEATURES, LLM_HIDDEN), nn.GELU(), nn.Linear(LLM_HIDDEN, LLM_HIDDEN))
        self.logit_token = nn.Linear(1, LLM_HIDDEN)
        self.lora = nn.ParameterDict()
        for name, shape in lora_shapes(config.lora_rank).items() if config.lora_rank else ():
            weight = torch.zeros(shape)
            if ".lora_A." in name:
                nn.init.kaiming_uniform_(weight, a=5 ** 0.5)
            self.lora[name.replace(".", "__")] = nn.Parameter(weight)

    def forward(self, visual: Visual) -> torch.Tensor:
        """[N, VISUAL_TOKENS, 576] embeddings of the visual tokens."""
        return torch.cat([self.net(visual.tokens), self.logit_token(visual.logit[:, None, None])], dim=1)


def visual_tokens(encoder: nn.Module, images: np.ndarray) -> Visual:
    """The encoder's tokens for images [N, 3, 64, 64] in [0, 1]: feature-map cells (2x2 at its 64-pixel input),
    their mean, and its fake logit (of the same pooled feature)."""
    def tokens(batch: torch.Tensor) -> torch.Tensor:
        grid = encoder.feature_map(batch).flatten(2).transpose(1, 2)  # [B, cells, 1280]
        pooled = grid.mean(dim=1, keepdim=True)
        logit = encoder.fake_logit(pooled[:, 0])[:, None, None].expand(-1, 1, grid.shape[2])
        return torch.cat([grid, pooled, logit], dim=1)
    packed = map_face_batches(tokens, images, 64)
    return Visual(packed[:, :-1], packed[:, -1, 0])


def answer_for(family: str, region: str) -> str:
    return ANSWERS[(family, region)]


def verdict_of(answer: str) -> str:
    """'real', 'fake' or 'unclear' from an answer's first word."""
    first = answer.strip().split(" ", 1)[0].strip(".,:;!").lower() if answer.strip() else ""
    return first if first in ("real", "fake") else "unclear"


def attach_lora(llm: nn.Module, projector: VisualProjector) -> None:
    """Put LoRA layers (peft) on the LLM's query and value projections, once, and point their matrices at the
    projector's, so that training updates and saving reads the projector's parameters. A projector without
    LoRA switches the LLM's LoRA off (its B matrices read zero), leaving the shipped LLM."""
    from peft import LoraConfig, inject_adapter_in_model

    config = projector.config
    if config.lora_rank and not _lora_layers(llm):
        inject_adapter_in_model(LoraConfig(r=config.lora_rank, lora_alpha=config.lora_alpha, lora_dropout=0.0,
                                           target_modules=list(LORA_TARGETS)), llm)
    for name, module in _lora_layers(llm).items():
        for part in ("lora_A", "lora_B"):
            key = f"{name}.{part}.weight".replace(".", "__")
            linear = getattr(module, part)["default"]
            if key in projector.lora:
                outer = 1 if part == "lora_A" else 0  # A is [rank, in], B [out, rank]; the rank may differ
                if projector.lora[key].shape[outer] != linear.weight.shape[outer]:
                    raise ModelError(f"the explainer's LoRA ({key}) does not fit this LLM: retrain it on SmolLM2-135M.")
                linear.weight = projector.lora[key]
            else:
                linear.weight = nn.Parameter(torch.zeros_like(linear.weight), requires_grad=False)
        module.scaling["default"] = config.lora_alpha / config.lora_rank if config.lora_rank else 0.0


def _lora_layers(llm: nn.Module) -> dict[str, nn.Module]:
    """The LLM's peft LoRA layers by module name (none before :func:`attach_lora` first injects them)."""
    return {name: module for name, module in llm.named_modules() if hasattr(module, "lora_A")}


class Explainer:
    """The projector with the frozen encoder and LLM it serves (the LLM wearing the projector's LoRA): images
    in, answers out."""

    def __init__(self, projector: VisualProjector, encoder: nn.Module, llm: nn.Module, tokenizer) -> None:
        self.projector, self.encoder, self.llm, self.tokenizer = projector.eval(), encoder.eval(), llm.eval(), tokenizer
        attach_lora(llm, projector)
        prefix, suffix = _prompt_pieces(tokenizer)
        self.prefix = torch.tensor(tokenizer(prefix, add_special_tokens=False)["input_ids"])
        self.suffix = torch.tensor(tokenizer(suffix, add_special_tokens=False)["input_ids"])
        self.verdict_ids = torch.tensor([tokenizer(v, add_special_tokens=False)["input_ids"][0] for v in VERDICTS])

    def prompt_embeddings(self, visual: Visual) -> torch.Tensor:
        """[N, T, 576]: the chat prompt with the projected visual tokens in place of the image."""
        embed = self.llm.get_input_embeddings()
        n = len(visual)
        return torch.cat([embed(self.prefix).expand(n, -1, -1), self.projector(visual),
                          embed(self.suffix).expand(n, -1, -1)], dim=1)

    @torch.no_grad()
    def answer(self, images: np.ndarray, max_new_tokens: int = 32, batch_size: int = 32) -> list[str]:
        """One answer per image: the verdict word the LLM ranks higher, then its greedy explanation."""
        answers = []
        visual = visual_tokens(self.encoder, images)
        verdict_ids = self.verdict_ids
        for start in range(0, len(visual), batch_size):
            prompt = self.prompt_embeddings(visual[start: start + batch_size])
            first = self.llm(inputs_embeds=prompt).logits[:, -1, verdict_ids].argmax(dim=1)
            embeds = torch.cat([prompt, self.llm.get_input_embeddings()(verdict_ids[first])[:, None]], dim=1)
            out = self.llm.generate(inputs_embeds=embeds, attention_mask=torch.ones(embeds.shape[:2], dtype=torch.long),
                                    max_new_tokens=max_new_tokens, do_sample=False)
            rest = self.tokenizer.batch_decode(out, skip_special_tokens=True)
            heads = [self.tokenizer.decode([int(verdict_ids[f])]) for f in first]  # "Real", or "F" of "F|ake"
            answers += [" ".join((head + t).split()) for head, t in zip(heads, rest)]
        return answers


def _prompt_pieces(tokenizer) -> tuple[str, str]:
    """The chat template around the image: (text before it, text after it up to the assistant's turn)."""
    marker = "<image>"
    text = tokenizer.apply_chat_template([{"role": "system", "content": "You judge whether faces are real."},
                                          {"role": "user", "content": f"{marker} {QUESTION}"}],
                                         tokenize=False, add_generation_prompt=True)
    before, after = text.split(marker)
    return before, after


def _answer_batch(explainer: Explainer, visual: Visual, answers: list[str]) -> torch.Tensor:
    """Cross-entropy of the answers' tokens (and the end of turn) given the prompt."""
    tokenizer, embed = explainer.tokenizer, explainer.llm.get_input_embeddings()
    ids = [tokenizer(a + "<|im_end|>", add_special_tokens=False)["input_ids"] for a in answers]
    longest = max(map(len, ids))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    answer_ids = torch.tensor([i + [pad] * (longest - len(i)) for i in ids])
    mask = torch.tensor([[1] * len(i) + [0] * (longest - len(i)) for i in ids])
    prompt = explainer.prompt_embeddings(visual)
    inputs = torch.cat([prompt, embed(answer_ids)], dim=1)
    attention = torch.cat([torch.ones(prompt.shape[:2], dtype=torch.long), mask], dim=1)
    logits = explainer.llm(inputs_embeds=inputs, attention_mask=attention).logits
    predicted = logits[:, prompt.shape[1] - 1: -1]  # each answer token from the position before it
    labels = answer_ids.masked_fill(mask == 0, -100)
    return F.cross_entropy(predicted.reshape(-1, predicted.shape[-1]), labels.reshape(-1), ignore_index=-100)


@lru_cache(maxsize=1)
def load_parts(encoder_name: str):
    """(encoder, llm, tokenizer): the shipped deepfake encoder and SmolLM2, frozen (loaded once a process)."""
    from effigy.models.encoders.llm import load_smollm2
    from effigy.models.zoo import load_zoo_model

    encoder, _ = load_zoo_model(encoder_name)
    llm, tokenizer = load_smollm2()
    for module in (encoder, llm):
        module.requires_grad_(False)
    return encoder, llm, tokenizer


def load_explainer(encoder_name: str | None = None) -> tuple[Explainer, ExplainerConfig]:
    """The shipped ``deepfake-explainer`` with the encoder and LLM it reads; ``encoder_name``, when given, must
    be that encoder (one clear error otherwise)."""
    from effigy.detect.deepfake.zoo import EXPLAINER
    from effigy.models.zoo import load_zoo_model

    projector, config = load_zoo_model(EXPLAINER)
    if encoder_name is not None and encoder_name != config.encoder:
        raise ModelError(f"{EXPLAINER} reads {config.encoder}'s features, not {encoder_name}'s; use {config.encoder}.")
    return Explainer(projector, *load_parts(config.encoder)), config


def train(config: ExplainerConfig, progress: Callable[[int, float], None] | None = None) -> VisualProjector:
    """Train the projector and the LLM's LoRA (seeded) on answers built from the encoder's training images'
    metadata."""
    from effigy.detect.deepfake.data import training_images

    torch.manual_seed(config.seed)
    encoder, llm, tokenizer = load_parts(config.encoder)
    data = training_images(encoder.config)
    rows = np.random.default_rng(config.seed).choice(len(data), min(config.examples, len(data)), replace=False)
    visual = visual_tokens(encoder, data.images[rows])
    answers = [answer_for(str(data.family[r]), str(data.region[r])) for r in rows]
    projector = VisualProjector(config)
    explainer = Explainer(projector, encoder, llm, tokenizer)
    projector.train()
    lora = list(projector.lora.parameters())
    others = [p for name, p in projector.named_parameters() if not name.startswith("lora.")]
    optimizer = torch.optim.AdamW([{"params": others}, {"params": lora, "lr_scale": config.lora_lr_scale}],
                                  lr=config.learning_rate, weight_decay=1e-4)
    generator = torch.Generator().manual_seed(config.seed)
    for step in range(config.train_steps):
        pick = torch.randint(len(rows), (config.batch_size,), generator=generator)
        loss = _answer_batch(explainer, visual[pick], [answers[int(i)] for i in pick])
        training_step(optimizer, loss, step, config.learning_rate * warmup_cosine(step, config.train_steps, 20),
                      progress=progress)
    return projector.eval()


def build_model(config: ExplainerConfig) -> VisualProjector:
    """The projector's structure (weights loaded by the zoo)."""
    return VisualProjector(config).eval()
