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
         ("upsample", "face"), ("synthetic", "face"))
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
    ("synthetic", "face"): "forgery: entirely generated face; region: whole face; artifact: smooth, averaged "
                           "features of a generator, no real person",
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
ARTIFACT_WORDS = {  # words only its own family's facts use, so that naming one family is not naming another
    "sbi": ("copy", "itself", "recolour", "recolor", "colour", "color", "mismatch"),
    "swap": ("someone else", "another", "other person", "swap", "donor", "different person"),
    "reenact": ("stretch", "shift", "warp", "moved", "distort", "out of line"),
    "upsample": ("checkerboard", "grid", "pattern", "periodic", "upsampl"),
    "synthetic": ("generated", "synthetic", "smooth", "averaged", "artificial", "no real person", "not a real person"),
}
ALTERED_WORDS = ("blend", "seam", "someone else", "another", "swap", "stretch", "warp", "distort", "out of line",
                 "checkerboard", "periodic", "upsampl", "fake", "manipulat", "alter", "forg", "synthetic", "generated")


@dataclass(frozen=True)
class CaptionPools:
    """Captions per kind of image ((family, region), or (family, region, visible cues)), and the model that
    wrote them."""

    pools: dict[tuple[str, ...], list[str]]
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
    misses, counts = {}, {}
    for (family, region, *_), pool in pools.pools.items():
        kind = f"{family}/{region}" if region else family
        misses[kind] = misses.get(kind, 0) + sum(not faithful(c, family, region) for c in pool)
        counts[kind] = counts.get(kind, 0) + len(pool)
    rates = {kind: misses[kind] / counts[kind] for kind in counts}
    rates["all"] = sum(misses.values()) / sum(counts.values())
    return rates


def _prompt(tokenizer, facts: str) -> str:
    messages = [{"role": "system", "content": SYSTEM}]
    for shot_facts, shot_caption in SHOTS:
        messages += [{"role": "user", "content": f"Facts: {shot_facts}"},
                     {"role": "assistant", "content": shot_caption}]
    messages.append({"role": "user", "content": f"Facts: {facts}"})
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


WRITER = "SmolLM2-135M-Instruct (few-shot, temperature 0.8)"


@lru_cache(maxsize=2)
def write_captions(per_kind: int = 16, seed: int = 0, max_new_tokens: int = 40) -> CaptionPools:
    """``per_kind`` captions for each kind of image, sampled (temperature 0.8, top-p 0.9, seeded) from
    SmolLM2-135M-Instruct prompted with the kind's facts and three examples."""
    result = CaptionPools(write_pools(tuple((kind, FACTS[kind]) for kind in KINDS), per_kind, seed, max_new_tokens),
                          WRITER)
    log.info("caption noise rate: %s", noise_rate(result))
    return result


def cue_facts(family: str, region: str, cues: str) -> str:
    """A fake's kind facts and what its change looks like on the pixels (``worlds.deepfakes.visible_cues``)."""
    return FACTS[(family, region)] if family == REAL else f"{FACTS[(family, region)]}; visible: {cues}"


@lru_cache(maxsize=2)
def write_cue_captions(keys: tuple[tuple[str, str, str], ...], per_kind: int = 4, seed: int = 0,
                       max_new_tokens: int = 40) -> CaptionPools:
    """``per_kind`` captions per (family, region, cues): each image's caption says what its own change looks like
    (blurred, darker, a visible seam...), in words that unseen families share, not only what kind it is."""
    return CaptionPools(write_pools(tuple((key, cue_facts(*key)) for key in keys), per_kind, seed, max_new_tokens),
                        WRITER)


def write_pools(facts: tuple[tuple[tuple, str], ...], per_kind: int, seed: int, max_new_tokens: int
                ) -> dict[tuple, list[str]]:
    """``per_kind`` captions for each (key, facts) pair, in order, from one seeded sampler."""
    from effigy.models.encoders.llm import load_smollm2

    model, tokenizer = load_smollm2()
    torch.manual_seed(seed)
    pools = {}
    for key, fact in facts:
        batch = tokenizer([_prompt(tokenizer, fact)] * per_kind, return_tensors="pt", padding=True,
                          padding_side="left")
        with torch.no_grad():
            out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=True, temperature=0.8, top_p=0.9)
        texts = tokenizer.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
        pools[key] = [" ".join(t.split()) or fact for t in texts]
    return pools
