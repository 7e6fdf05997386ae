"""The FastVAR peer on a tiny VAR: keeping every token is generation unchanged; keeping fewer computes fewer
attention pairs; pivotal tokens are the ones farthest from the mean; bad shares are refused."""
import pytest
import torch

from effigy.attention.litevar import apply_litevar, total_flops
from effigy.attention.multiscale import LiteVARPlan
from effigy.bench.peers.fastvar import install_fastvar, pivotal_tokens, remove_fastvar
from effigy.errors import BenchError
from tests.models.test_var import tiny_tokenizer, tiny_var

LABELS = torch.tensor([1, 5, 8])


@torch.no_grad()
def test_keeping_every_token_changes_nothing_and_pruning_computes_less():
    model, tokenizer = tiny_var(), tiny_tokenizer()
    reference = model.generate(tokenizer, LABELS, seed=3)
    install_fastvar(model, 1.0)
    counted = apply_litevar(model, LiteVARPlan.full(model))
    torch.testing.assert_close(model.generate(tokenizer, LABELS, seed=3), reference)
    full = total_flops(counted)
    install_fastvar(model, 0.25)
    processors = apply_litevar(model, LiteVARPlan.full(model))
    images = model.generate(tokenizer, LABELS, seed=3)
    assert torch.isfinite(images).all() and not torch.equal(images, reference)
    assert total_flops(processors)["core_flops"] < 0.6 * full["core_flops"]
    remove_fastvar(model)
    assert model.scale_hook is None


def test_pivotal_tokens_are_the_farthest_from_the_mean_in_position_order():
    x = torch.zeros(1, 6, 2)
    x[0, 4] = 5.0
    x[0, 1] = -3.0
    assert pivotal_tokens(x, 2).tolist() == [[1, 4]]


def test_bad_shares_and_models_are_refused():
    with pytest.raises(BenchError, match=r"\(0, 1\]"):
        install_fastvar(tiny_var(), 0.0)
    with pytest.raises(BenchError, match="effigy's VAR"):
        install_fastvar(torch.nn.Linear(2, 2), 0.5)
