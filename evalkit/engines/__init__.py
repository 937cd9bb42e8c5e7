"""Engines run one suite entry and hand back samples and metrics for the store.

Today: lm-eval (any lm-eval task, its prompts/filters/metrics untouched). Engines receive a
model layer object and never write to the store themselves beyond the request cache.
"""
