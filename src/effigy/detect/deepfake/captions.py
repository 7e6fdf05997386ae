"""Artifact descriptions for the deepfake encoder's image-text contrastive learning, written few-shot by the
shipped SmolLM2-135M-Instruct from each fake's metadata (AuthGuard, arXiv 2506.04501, has a generalist
multimodal LLM write them from a few examples; effigy's LLM sees the metadata instead of the pixels).

A small LLM sampling at temperature 0.8 is noisy on purpose, as the paper's captions are: some captions name
the wrong region or none, some real faces are described as altered. :func:`faithful` checks a caption against
the metadata it was written from, and :func:`noise_rate` is the share that fails.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache

import torch

log = logging.getLogger(__name__)

REAL = "real"
# (family, region) of every kind of image the world makes; the caption pools are keyed by it.
KINDS = (("real", ""), ("sbi", "face"), ("swap", "face"), ("reenact", "mouth"), ("reenact", "eyes"),
         ("upsample", "face"))
FACTS = {
    ("real", ""): "real photo; no manipulation",
    ("sbi", "face"): "forgery: face blended with a shifted, recoloured copy of itself; region: whole face; "
                     "artifact: blending boundary and colour mismatch",
    ("swap", "face"): "forgery: face swap; region: whole face; artifact: another person's face blended in, "
                      "with a boundary and skin-tone seam",
    ("reenact", "mouth"): "forgery: warped mouth; region: mouth; artifact: mouth stretched and shifted against "
                          "the rest of the face",
    ("reenact", "eyes"): "forgery: warped eyes; region: eyes; artifact: eyes stretched and shifted against the "
                         "rest of the face",
    ("upsample", "face"): "forgery: generator upsampling; region: whole face; artifact: checkerboard grid and "
                          "periodic pattern",
}
SHOTS = (  # the few examples the LLM imitates (two fakes and a real face, none of them another kind's words)
    ("real photo; no manipulation",
     "A natural photo of a person's face with even skin and consistent lighting."),
    ("forgery: face swap; region: whole face; artifact: another person's face blended in, with a boundary "
     "and skin-tone seam",
     "The inner face belongs to someone else: a faint seam runs around the face and the skin tone shifts at "
     "the boundary."),
    ("forgery: warped mouth; region: mouth; artifact: mouth stretched and shifted against the rest of the face",
     "The mouth looks stretched and shifted, out of line with the rest of the face."),
)
SYSTEM = ("You write one-sentence descriptions of face images for a forensic data set. Describe what is "
          "visible and name the region.")

REGION_WORDS = {"face": ("face",), "mouth": ("mouth", "lip"), "eyes": ("eye",)}
ARTIFACT_WORDS = {
    "sbi": ("blend", "boundary", "colour", "color", "seam", "tone", "copy"),
    "swap": ("someone else", "another", "other person", "swap", "seam", "boundary"),
    "reenact": ("stretch", "shift", "warp", "moved", "distort", "out of line"),
    "upsample": ("checkerboard", "grid", "pattern", "periodic", "upsampl"),
}
ALTERED_WORDS = ("blend", "seam", "someone else", "another", "swap", "stretch", "warp", "distort", "out of line",
                 "checkerboard", "periodic", "upsampl", "fake", "manipulat", "alter", "forg", "synthetic")


@dataclass(frozen=True)
class CaptionPools:
    """Captions per kind of image, and the model that wrote them."""

    pools: dict[tuple[str, str], list[str]]
    writer: str

    def caption(self, family: str, region: str, index: int) -> str:
        pool = self.pools[(family, region)]
        return pool[index % len(pool)]


NEGATIONS = ("not", "no", "without", "never", "isn't", "wasn't", "nothing")


def faithful(caption: str, family: str, region: str) -> bool:
    """Does ``caption`` say what the metadata says? A real face's caption must not describe an alteration
    (a negated one, "not manipulated", is fine); a fake's must name its region and an artifact of its family."""
    text = caption.lower()
    if family == REAL:
        return not any(_affirmed(text, word) for word in ALTERED_WORDS)
    return any(w in text for w in REGION_WORDS[region]) and any(w in text for w in ARTIFACT_WORDS[family])


def _affirmed(text: str, word: str) -> bool:
    """``word`` occurs in ``text`` at least once without a negation among the three words before it or an
    'un' prefix ("unaltered")."""
    start = text.find(word)
    while start >= 0:
        before = text[:start]
        if not before.endswith("un") and not set(before.replace(",", " ").split()[-3:]) & set(NEGATIONS):
            return True
        start = text.find(word, start + 1)
    return False


def noise_rate(pools: CaptionPools) -> dict[str, float]:
    """Share of captions that are not :func:`faithful`, per kind ('family/region') and overall."""
    rates, wrong, total = {}, 0, 0
    for (family, region), pool in pools.pools.items():
        misses = sum(not faithful(c, family, region) for c in pool)
        rates[f"{family}/{region}" if region else family] = misses / len(pool)
        wrong, total = wrong + misses, total + len(pool)
    rates["all"] = wrong / total
    return rates


def _prompt(tokenizer, facts: str) -> str:
    messages = [{"role": "system", "content": SYSTEM}]
    for shot_facts, shot_caption in SHOTS:
        messages += [{"role": "user", "content": f"Facts: {shot_facts}"},
                     {"role": "assistant", "content": shot_caption}]
    messages.append({"role": "user", "content": f"Facts: {facts}"})
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


@lru_cache(maxsize=2)
def write_captions(per_kind: int = 16, seed: int = 0, max_new_tokens: int = 40) -> CaptionPools:
    """``per_kind`` captions for each kind of image, sampled (temperature 0.8, top-p 0.9, seeded) from
    SmolLM2-135M-Instruct prompted with the kind's facts and three examples."""
    from effigy.models.encoders.llm import load_smollm2

    model, tokenizer = load_smollm2()
    torch.manual_seed(seed)
    pools = {}
    for kind in KINDS:
        batch = tokenizer([_prompt(tokenizer, FACTS[kind])] * per_kind, return_tensors="pt", padding=True,
                          padding_side="left")
        with torch.no_grad():
            out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=True, temperature=0.8, top_p=0.9)
        texts = tokenizer.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
        pools[kind] = [" ".join(t.split()) or FACTS[kind] for t in texts]
    result = CaptionPools(pools, "SmolLM2-135M-Instruct (few-shot, temperature 0.8)")
    log.info("caption noise rate: %s", noise_rate(result))
    return result
