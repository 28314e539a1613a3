"""Benchmarks: ``mmadapter bench data`` measures the data pipeline."""
