"""One model layer for every engine: parse a MODEL string, resolve its weights, load it.

Engines (lm-eval, inspect-ai, the judge, TRL) get models only through here, so a model string
means the same thing everywhere and a run records exactly which weights it measured.
"""

from evalkit.models.spec import ModelSpec, parse_model

__all__ = ["ModelSpec", "parse_model"]
