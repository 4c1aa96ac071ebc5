"""Latency profiling: per-frame records, reports, traces."""
