"""One module per comparison (quant, fastattn, kvquant, kernels, scale, lcm, mixdq, flasheval, litevar, ada3d, fas,
robustness, deepfake): settings, a runner and its report; ``compiled`` adds the compiled rows and the crossover
batch to the shipped-model benches; ``variants`` holds what every bench shares.

Peers (other libraries' methods run on the same model and inputs) live in :mod:`effigy.bench.peers`.
"""
from effigy.quiet import quiet_third_party_imports

quiet_third_party_imports()
