"""Benchmarks with ground truth: generated objects whose parts are known, and the small CNN trained on them."""
