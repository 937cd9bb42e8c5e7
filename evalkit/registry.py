"""Name → implementation, imported on first use: how suites find engines and the CLI finds commands.

Why a registry of *strings*: a suite says ``engine: inspect`` and must be validated, frozen and
hashed without importing inspect-ai, torch or lm-eval, and the modules that implement engines
import the suite's data types. If the suite layer imported the engines to look them up, the two
would import each other (the circle this module removed). Here a built-in is a ``"module:attr"``
placeholder, imported under a lock the first time it is asked for and cached (lm-eval's
``lm_eval/api/registry.py`` does the same). Plugins come from an entry-point group: a package
declares ``[project.entry-points."evalkit.engines"] myengine = "mypkg.engine:ENGINE"`` and needs
no edit here. Names are known without importing anything, so listing them is free.

An import error of an optional built-in (inspect-ai not installed) or of a plugin is kept and
reported, with its cause, when that name is asked for — never turned into "unknown name".
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Iterable
from importlib.metadata import entry_points
from typing import Any, Generic, TypeVar

from evalkit.errors import EvalkitError

T = TypeVar("T")


class Registry(Generic[T]):
    """Named objects of one kind, given as objects or as ``"module:attr"`` strings loaded lazily."""

    def __init__(self, kind: str, builtins: dict[str, str], group: str | None = None,
                 check: Callable[[Any], bool] | None = None) -> None:
        self.kind = kind
        self.group = group
        self._check = check
        self._lock = threading.RLock()  # re-entrant: importing a module may register into this registry
        self._places: dict[str, str] = dict(builtins)
        self._loaded: dict[str, T] = {}
        self._plugins_listed = False

    # ------------------------------------------------------------------ naming
    def _list_plugins(self) -> None:
        if self._plugins_listed or self.group is None:
            return
        self._plugins_listed = True
        for ep in entry_points(group=self.group):
            self._places.setdefault(ep.name, ep.value)

    def names(self) -> list[str]:
        """Every known name, built-in and plugin, without importing any of them."""
        self._list_plugins()
        return sorted(set(self._places) | set(self._loaded))

    def __contains__(self, name: str) -> bool:
        return name in self.names()

    def place(self, name: str) -> str | None:
        """Where ``name`` lives (``"module:attr"``), or None for an object registered directly."""
        self._list_plugins()
        return self._places.get(name)

    # -------------------------------------------------------------- resolving
    def register(self, name: str, obj: T) -> T:
        """Register an object under ``name`` (an existing name is replaced: tests swap fakes in)."""
        if self._check is not None and not self._check(obj):
            raise EvalkitError(f"{self.kind} '{name}': {obj!r} is not a {self.kind}")
        with self._lock:
            self._loaded[name] = obj
        return obj

    def get(self, name: str) -> T:
        if name in self._loaded:
            return self._loaded[name]
        place = self.place(name)
        if place is None:
            raise EvalkitError(f"{self.kind} '{name}': unknown (known: {', '.join(self.names())})")
        with self._lock:
            if name not in self._loaded:
                self._loaded[name] = self._import(name, place)
        return self._loaded[name]

    def _import(self, name: str, place: str) -> T:
        module, _, attr = place.partition(":")
        try:
            obj: Any = importlib.import_module(module)
            for part in attr.split(".") if attr else ():
                obj = getattr(obj, part)
        except ImportError as exc:
            raise EvalkitError(f"{self.kind} '{name}': cannot import {place} ({type(exc).__name__}: {exc})") from exc
        except AttributeError as exc:
            raise EvalkitError(f"{self.kind} '{name}': {place} does not exist ({exc})") from exc
        if self._check is not None and not self._check(obj):
            raise EvalkitError(f"{self.kind} '{name}': {place} is not a {self.kind}")
        return obj

    def items(self, names: Iterable[str] | None = None) -> list[tuple[str, T]]:
        return [(n, self.get(n)) for n in (names if names is not None else self.names())]


def _is_engine(obj: Any) -> bool:
    return all(callable(getattr(obj, m, None)) for m in ("freeze", "run")) and isinstance(getattr(obj, "name", None), str)


#: Suite engines (``engine:`` in a suite entry). Each place holds an object with ``name``,
#: ``freeze(entry, data_dir, suite_dir, limit) -> FrozenEntry`` and ``run(frozen, model, ctx)``
#: (:class:`evalkit.engines.base.Engine`).
ENGINES: Registry[Any] = Registry(
    "engine",
    {
        "lm-eval": "evalkit.engines.lmeval.engine:ENGINE",
        "inspect": "evalkit.engines.inspect.engine:ENGINE",
        "judge": "evalkit.engines.judge_engine:ENGINE",
    },
    group="evalkit.engines",
    check=_is_engine,
)

#: Extra ``evalkit`` subcommands contributed by other packages (``trainloop`` adds ``loop``):
#: each place holds ``register(subparsers) -> None``, which adds one subparser and sets its ``func``.
COMMANDS: Registry[Callable[[Any], None]] = Registry("command", {}, group="evalkit.commands", check=callable)
