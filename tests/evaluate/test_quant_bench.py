from effigy.evaluate.measure import run_in_fresh_process
from effigy.evaluate.quant_bench import QuantBenchSettings, memory_probe
from effigy.recipes import get_recipe


def test_memory_probe_reports_a_plausible_peak_in_a_fresh_process():
    settings = QuantBenchSettings(steps=2, latency_samples=10).to_dict()
    fp = run_in_fresh_process(memory_probe, None, settings)
    quant = memory_probe(get_recipe("naive-w8a8").to_dict(), settings)  # static recipe: calibrates too
    assert 50 < fp["peak_rss_mib"] < 4096
    assert quant["peak_rss_mib"] >= quant["rss_mib"] > 0
