"""FlashEval (Zhao et al., CVPR 2024, https://arxiv.org/abs/2403.16379): a small prompt subset that ranks
text-to-image model variants like the full prompt set.

  - :mod:`.matrix`: score matrices [variants, prompts] per metric (safetensors + JSON);
  - :mod:`.readers`: matrices a user already has (wide CSV / NPZ, long CSV / JSONL / Parquet tables,
    per-model JSON folders and FlashEval's released tree);
  - :mod:`.variants` / :mod:`.build`: effigy's own variants of the shapes models, scored in parallel jobs
    (a process pool or Ray), cached per (variant, shard);
  - :mod:`.search`: the published iterative subset search and the baselines it is compared with.
"""
from effigy.evaluate.flasheval.matrix import ScoreMatrix
from effigy.evaluate.flasheval.readers import read_scores

__all__ = ["ScoreMatrix", "read_scores"]
