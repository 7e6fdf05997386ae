"""FlashEval (Zhao et al., CVPR 2024, https://arxiv.org/abs/2403.16379): a small prompt subset that ranks
text-to-image model variants like the full prompt set.

  - :mod:`.matrix`: score matrices [variants, prompts] per metric (safetensors + JSON), and readers for
    matrices a user already has (CSV, NPZ, FlashEval's per-model JSON files);
  - :mod:`.variants` / :mod:`.build`: effigy's own variants of the shapes models, scored in parallel jobs
    (a process pool or Ray), cached per (variant, shard);
  - :mod:`.search`: the published iterative subset search and the baselines it is compared with.
"""
from effigy.evaluate.flasheval.matrix import ScoreMatrix, read_scores

__all__ = ["ScoreMatrix", "read_scores"]
