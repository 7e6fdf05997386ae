"""One hook convention: ``observing`` for hooks that watch one run, named attach / detach / reset for hooks that
stay, and every ``remove_*`` behaving alike (a no-op returning False on a model without the method)."""
import copy

import pytest
import torch
from torch import nn

from effigy.core.hooks import observing
from effigy.nn.hooks import ModelHook, attach_hook, attached_hook, attached_hooks, detach_hook, reset_hooks


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))


def _torch_hooks(model: nn.Module) -> int:
    return sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in model.modules())


def test_observing_sees_each_named_input_and_removes_its_hooks_even_when_the_run_fails():
    model, seen = _mlp(), []
    with observing(model, ["0", "2"], lambda name, _module, args: seen.append((name, tuple(args[0].shape)))):
        model(torch.randn(3, 4))
    assert seen == [("0", (3, 4)), ("2", (3, 8))] and _torch_hooks(model) == 0
    with pytest.raises(RuntimeError, match="boom"):
        with observing(model, [""], lambda *a: None, "after"):
            raise RuntimeError("boom")
    assert _torch_hooks(model) == 0
    with pytest.raises(ValueError, match="when must be"):
        with observing(model, [""], lambda *a: None, "during"):
            pass


def test_observing_after_may_replace_the_output():
    model = _mlp()
    x = torch.randn(2, 4)
    with observing(model, [""], lambda _name, _module, _args, output: output * 0, "after"):
        assert torch.equal(model(x), torch.zeros(2, 2))
    assert not torch.equal(model(x), torch.zeros(2, 2))


class _Doubler(ModelHook):
    name = "doubler"

    def __init__(self) -> None:
        self.calls = 0

    def attach(self, module):
        self.register(module, self._double, "after")

    def _double(self, _module, _args, output):
        self.calls += 1
        return output * 2

    def detach(self, module):
        self.unregister(module)

    def reset(self):
        self.calls = 0


def test_attach_detach_reset_by_name_and_a_second_attach_replaces_the_first():
    model, x = _mlp(), torch.randn(2, 4)
    plain = model(x)
    first = attach_hook(model, _Doubler())
    second = attach_hook(model, _Doubler())  # the same name: the first is detached, not stacked
    assert attached_hooks(model) == ["doubler"] and attached_hook(model, "doubler") is second
    torch.testing.assert_close(model(x), 2 * plain)
    assert (first.calls, second.calls) == (0, 1)
    reset_hooks(model)
    assert second.calls == 0
    assert detach_hook(model, "doubler") is second
    torch.testing.assert_close(model(x), plain)
    assert _torch_hooks(model) == 0
    assert detach_hook(model, "doubler") is None  # nothing attached: a no-op


def test_a_deep_copy_carries_its_own_hooks_and_detaching_it_leaves_the_original_alone():
    model, x = _mlp(), torch.randn(2, 4)
    plain = model(x)
    attach_hook(model, _Doubler())
    twin = copy.deepcopy(model)
    assert attached_hook(twin, "doubler") is not attached_hook(model, "doubler")
    detach_hook(twin, "doubler")
    torch.testing.assert_close(twin(x), plain)
    torch.testing.assert_close(model(x), 2 * plain)


def _ditfastattn(tiny_dit):
    from effigy.attention import AttentionPlan, apply_ditfastattn, remove_ditfastattn
    from effigy.attention.plan import FULL, model_signature

    plan = AttentionPlan([[FULL] * 2], [500], 0.25, 0.1, "rel_l1", model_signature(tiny_dit), True)
    return tiny_dit, lambda m: apply_ditfastattn(m, plan), remove_ditfastattn


def _litevar(_tiny_dit):
    from effigy.attention.litevar import apply_litevar, remove_litevar
    from effigy.attention.multiscale import LiteVARPlan
    from tests.models.test_var import tiny_var

    model = tiny_var()
    return model, lambda m: apply_litevar(m, LiteVARPlan.full(m)), remove_litevar


def _fastvar(_tiny_dit):
    from effigy.bench.peers.fastvar import install_fastvar, remove_fastvar
    from tests.models.test_var import tiny_var

    return tiny_var(), lambda m: install_fastvar(m, 0.5), remove_fastvar


def _state(model: nn.Module) -> tuple:
    processors = tuple(type(m.processor).__name__ for m in model.modules() if hasattr(m, "processor"))
    return processors, getattr(model, "scale_hook", None), _torch_hooks(model), tuple(attached_hooks(model))


@pytest.mark.parametrize("method", [_ditfastattn, _litevar, _fastvar])
def test_every_remove_behaves_alike(method, tiny_dit):
    model, apply, remove = method(tiny_dit)
    before = _state(model)
    assert remove(model) is False and _state(model) == before  # not applied: nothing happens, no error
    apply(model)
    assert _state(model) != before
    apply(model)  # applied twice: one copy
    assert len(attached_hooks(model)) == 1
    assert remove(model) is True and _state(model) == before
    assert remove(model) is False
