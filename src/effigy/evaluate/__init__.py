"""Benchmark runners: they measure methods on shipped models and write JSON + Markdown results."""
