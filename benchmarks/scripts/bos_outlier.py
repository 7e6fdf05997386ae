"""Is the text encoder's first token ([CLS]) a magnitude outlier in what cross-attention's to_k / to_v read,
and is its output the same for every prompt? MixDQ's premise (issue 22, part 2): CLIP's causal BOS output is
one constant outlier vector, so its K/V can be precomputed in FP. all-MiniLM-L6-v2 (the shapes model's
encoder) is bidirectional, so its [CLS] output may depend on the prompt. Measured on the shipped t2i-shapes
model's real cross-attention inputs (after the caption projection), 200 held-out prompts, seed 0.

    HF_HUB_OFFLINE=1 python benchmarks/scripts/bos_outlier.py   # ~1 min on 2 cores
"""
import json
from pathlib import Path

import torch

from effigy.evaluate.measure import machine_facts
from effigy.evaluate.report import machine_line, markdown_table
from effigy.evaluate.t2i import T2ISuite, prompt_set

OUT = Path("benchmarks/results/checks")
PROMPTS = 200


@torch.no_grad()
def main() -> None:
    suite = T2ISuite.load()
    captions = [scene.caption for scene in prompt_set(PROMPTS, "heldout", seed=0)]
    encoded = suite.bank.encode(captions)
    hidden, mask = encoded["encoder_hidden_states"], encoded["encoder_attention_mask"].bool()
    projected = suite.transformer.caption_projection(hidden)  # what to_k / to_v of every block read
    rows = [stats(name, x, mask) for name, x in (("encoder output", hidden), ("after caption projection", projected))]
    result = {"prompts": PROMPTS, "rows": rows, "machine": machine_facts(),
              "command": "python benchmarks/scripts/bos_outlier.py"}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "bos_outlier_t2i_shapes.json").write_text(json.dumps(result, indent=2))
    columns = [(k, k) for k in rows[0]]
    text = ("# Is [CLS] an outlier for cross-attention? (t2i-shapes, all-MiniLM-L6-v2)\n\n"
            f"Command: `{result['command']}`; {PROMPTS} held-out prompts, seed 0.  \n{machine_line(result['machine'])}\n\n"
            "Per token: max abs over channels. 'other tokens' are the real (unpadded) tokens after [CLS]. "
            "'Sets the per-tensor range': the fraction of prompts in which [CLS] holds the largest value of the "
            "whole caption (so a per-tensor scale is set by it). Cosine across prompts: mean pairwise cosine of "
            "the [CLS] vectors (1 = the same "
            "vector for every prompt, precomputable).\n\n" + markdown_table(rows, columns) + "\n")
    (OUT / "bos_outlier_t2i_shapes.md").write_text(text)
    print(text)


def stats(name: str, x: torch.Tensor, mask: torch.Tensor) -> dict:
    peak = x.abs().amax(-1)  # [prompts, tokens]
    cls, others = peak[:, 0], peak[:, 1:][mask[:, 1:]]
    cls_vectors = torch.nn.functional.normalize(x[:, 0], dim=-1)
    cosine = cls_vectors @ cls_vectors.T
    off_diagonal = cosine[~torch.eye(len(cosine), dtype=torch.bool)]
    share = (cls / torch.stack([cls, peak[:, 1:].masked_fill(~mask[:, 1:], 0).amax(-1)], -1).amax(-1))
    return {"tensor": name, "[CLS] max abs (mean)": round(cls.mean().item(), 4),
            "other tokens max abs (mean)": round(others.mean().item(), 4),
            "[CLS] / others": round((cls.mean() / others.mean()).item(), 3),
            "prompts where [CLS] sets the per-tensor range": round((share >= 1).float().mean().item(), 3),
            "[CLS] cosine across prompts": round(off_diagonal.mean().item(), 4),
            "min cosine": round(off_diagonal.min().item(), 4)}


if __name__ == "__main__":
    main()
