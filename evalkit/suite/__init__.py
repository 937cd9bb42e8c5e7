"""Suites are data: YAML files defined and frozen before any training.

:mod:`evalkit.suite.config` parses and validates a suite file (errors name file and line);
:mod:`evalkit.suite.freeze` resolves it against data and engines into the exact configs that
will run and hashes them, so "the same suite" has a checkable meaning.
"""

from evalkit.suite.config import Suite, SuiteEntry, load_suite

__all__ = ["Suite", "SuiteEntry", "load_suite"]
