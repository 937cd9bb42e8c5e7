"""Benchmark tasks whose scoring evalkit implements itself (e.g. HumanEval in a sandbox)."""
