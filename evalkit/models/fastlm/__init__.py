"""evalkit's fast lm-eval backend: lm-eval's HF backend with a faster request scheduler.

Prompts, tokenisation, stop handling and post-processing stay lm-eval's (the class subclasses
``HFLM``); only how the forward passes are scheduled changes: shared-prefix key/value reuse,
length-bucketed batches, logits only where they are read, and continuous batching for generation
(each row stops at its own stop sequence and its slot is refilled).
"""

from evalkit.models.fastlm.backend import FastLM

__all__ = ["FastLM"]
