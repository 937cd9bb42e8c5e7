"""Seeding what lm-eval leaves unseeded, so a score is a function of the responses alone.

IFEval's ``language:response_language`` and ``change_case:english_lowercase``/``english_capital``
checkers call ``langdetect.detect``, which samples n-grams from its own RNG; lm-eval and
upstream never seed it, so the same short or mixed-language text can be judged differently from
run to run (measured: ``detect("Hello world")`` gave ``nl`` 30 and ``en`` 10 times out of 40).
``evalkit eval`` and ``evalkit score`` both score under :func:`seeded_langdetect`, so they agree
with each other and with themselves.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


# One fixed seed for eval and score alike (not the entry's sampling seed: a score must not depend
# on how the answers were sampled).
LANGDETECT_SEED = 0


@contextmanager
def seeded_langdetect(seed: int = LANGDETECT_SEED) -> Iterator[None]:
    """Set ``langdetect.DetectorFactory.seed`` (read by each new Detector) and restore it after."""
    try:
        from langdetect import DetectorFactory
    except ImportError:  # pragma: no cover - installs without IFEval's dependencies
        yield
        return
    saved = DetectorFactory.seed
    DetectorFactory.seed = seed
    try:
        yield
    finally:
        DetectorFactory.seed = saved


__all__ = ["seeded_langdetect"]
