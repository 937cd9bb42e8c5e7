"""JSON for numbers that may be NaN or infinite: the one place evalkit turns them into ``null``.

Why: a CI on one sample, a κ with one class, a metric lm-eval could not compute all come out
as ``nan``. Python's ``json`` writes that as the bare word ``NaN``, which is not JSON: browsers'
``JSON.parse``, ``jq`` and most other readers reject the whole document. Everything evalkit
stores or prints as JSON goes through :func:`json_safe` (or :func:`dumps`), so a missing number
is always ``null`` and the document always parses. numpy scalars and arrays become plain
Python numbers and lists on the way.
"""

from __future__ import annotations

import json
import math
from typing import Any


def json_safe(value: Any) -> Any:
    """``value`` with every NaN/±inf float replaced by None, recursively (dicts, lists, tuples,
    numpy scalars and arrays); everything else is returned as is."""
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    tolist = getattr(value, "tolist", None)  # numpy scalar or array, without importing numpy
    if callable(tolist) and type(value).__module__ == "numpy":
        return json_safe(tolist())
    return value


def finite_or_none(value: Any) -> float | None:
    """``float(value)``, or None when ``value`` is None, NaN or ±inf: a nullable REAL column's value
    (the scalar case of :func:`json_safe`, for numbers stored outside JSON)."""
    if value is None:
        return None
    x = float(value)
    return x if math.isfinite(x) else None


def dumps(value: Any, *, sort_keys: bool = True, **kwargs: Any) -> str:
    """``json.dumps`` of :func:`json_safe` (value); unknown objects become their ``str``, and a NaN
    that slipped through raises instead of writing invalid JSON."""
    kwargs.setdefault("default", str)
    return json.dumps(json_safe(value), sort_keys=sort_keys, allow_nan=False, **kwargs)
