"""Aggregation rules that are benchmark contenders only (not library code)."""
