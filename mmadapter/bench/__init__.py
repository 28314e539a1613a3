"""Benchmarks behind ``mmadapter bench``.

- ``bench data`` (:mod:`mmadapter.bench.data`): samples/s and tokens/s of the shard → batch pipeline.
- ``bench model`` (:mod:`mmadapter.bench.model`): one training workload through mmadapter and through a plain
  Hugging Face transformers + PEFT baseline (:mod:`mmadapter.bench.baseline`) in one process — real tokens/s,
  step time, peak memory and their ratios (DESIGN.md §7).
"""
