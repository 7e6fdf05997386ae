"""Method-independent evaluation: suites (a shipped model with its samplers and judges), measurement (timing,
memory, machine facts), reports and pictures, text-to-image evaluation, FlashEval (``flasheval``), and model
resolution and calibration for ``effigy quantize`` (``calibration``). The comparisons themselves live in
:mod:`effigy.bench`."""
