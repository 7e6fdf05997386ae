"""Could W4A8 mixed precision trade bits across diffusion timesteps instead of across layers? The whole
ViDiT-Q W4A8 model (same balancing divisors) at 3, 4 or 6 weight bits, swapped by timestep range (4 ranges
of 250 training steps), sampled on the quant bench's validation run. Budget-neutral trades put one range
at 6 bits and two at 3.

    HF_HUB_OFFLINE=1 python benchmarks/scripts/bits_by_timestep_range.py [dit-digits|t2i-shapes]   # ~4 min
"""
import copy
import itertools
import sys
from dataclasses import replace

from torch import nn
from validation_run import validation_run, write_check

from effigy.nn.quantize import quantize
from effigy.recipes import get_recipe

RANGES, WIDTH = 4, 250
run = validation_run(sys.argv[1] if len(sys.argv) > 1 else "dit-digits")
fp, base = run.world.fp_model, get_recipe("vidit-q-w4a8")
by_bits = {bits: quantize(copy.deepcopy(fp), replace(base, weight=replace(base.weight, bits=bits)),
                          run.world.sample_calibration, input_divisors=run.divisors) for bits in (3, 4, 6)}


class BitsByRange(nn.Module):
    """Calls the model quantized at ``bits[k]`` for timesteps in range k (k = t // 250)."""

    def __init__(self, bits: tuple[int, ...]):
        super().__init__()
        self.bits, self.config, self.dtype = bits, fp.config, fp.dtype

    def forward(self, *args, **kwargs):
        step = int(kwargs["timestep"].flatten()[0])
        return by_bits[self.bits[min(step // WIDTH, RANGES - 1)]](*args, **kwargs)


def allocations():
    yield (4,) * RANGES
    for k, bits in itertools.product(range(RANGES), (3, 6)):
        yield tuple(bits if r == k else 4 for r in range(RANGES))
    for up in range(RANGES):
        for down in itertools.combinations([r for r in range(RANGES) if r != up], 2):
            yield tuple(6 if r == up else 3 if r in down else 4 for r in range(RANGES))


rows = [{"bits": " / ".join(map(str, bits)), "average_bits": sum(bits) / RANGES, **run.quality(BitsByRange(bits))}
        for bits in allocations()]
write_check(run, "bits_by_timestep_range", "W4A8 weight bits by timestep range", rows,
            [("bits", "bits for t in [0,250) / [250,500) / [500,750) / [750,1000)"), ("average_bits", "average bits")])
