"""Benchmarks: Rehost's throughput and latency as ratios to ceilings measured in the same run."""
