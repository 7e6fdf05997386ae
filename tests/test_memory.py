import torch
from torch import nn

from effigy.memory import held_bytes, reachable_tensors


def test_a_shared_storage_and_its_views_count_once():
    base = torch.zeros(100)
    holder = {"a": base, "b": base[10:20], "c": [base.view(10, 10)]}
    assert held_bytes(holder) == 400


def test_attributes_outside_the_state_dict_are_counted():
    layer = nn.Linear(8, 4)
    counted = sum(p.nbytes for p in layer.parameters())
    assert held_bytes(layer) == counted
    layer.hidden_copy = torch.zeros(8, 4)  # a plain attribute, invisible to state_dict
    assert held_bytes(layer) == counted + 8 * 4 * 4


def test_cycles_and_plain_objects_are_walked_once():
    class Holder:
        pass

    a, b = Holder(), Holder()
    a.other, b.other = b, a
    a.t, b.t = torch.ones(3), torch.ones(5, dtype=torch.float16)
    assert held_bytes(a) == 3 * 4 + 5 * 2
    assert {t.numel() for t in reachable_tensors(a)} == {3, 5}
