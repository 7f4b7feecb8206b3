"""Benchmark scripts (run them as files; a package so that Opacus's own top-level `benchmarks` cannot shadow them)."""
