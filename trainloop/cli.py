"""``evalkit loop``: the loop's subcommand, contributed to ``evalkit`` through the
``evalkit.commands`` entry-point group (evalkit itself never imports trainloop).

Why the flags are generated from :class:`~trainloop.config.LoopConfig`: a setting's default and
help live in one place, the dataclass field, and every field is settable from the command line.
Precedence stays dataclass default < YAML (``--config``) < flag: every generated option defaults
to ``None`` ("not given"), and only given flags override the YAML. ``--data-dir`` alone takes its
default from ``$EVALKIT_DATA_DIR``, which therefore counts as given, as it always has.
"""

from __future__ import annotations

import argparse
import json
import os
import types
import typing
from dataclasses import MISSING, Field, fields
from typing import Any

from trainloop.config import LoopConfig

NESTED = ("train", "gate")  # nested configs: set them in the YAML file (train: {...}, gate: {...})


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``loop`` to the ``evalkit`` parser's subcommands."""
    lp = subparsers.add_parser("loop", help="eval -> failure clusters -> counterexample data -> LoRA SFT/DPO -> gated promotion")
    lp.add_argument("--config", help="loop settings YAML (keys of trainloop.config.LoopConfig, train: and gate: "
                                     "included); flags override it")
    add_config_flags(lp)
    lp.add_argument("--plan", action="store_true", help="dry run: round 0 (eval, clusters) and the power plan, no training")
    from evalkit.env import REPORTS_HELP, absolute_reports_dir, reports_dir_default

    lp.add_argument("--reports-dir", default=reports_dir_default(), type=absolute_reports_dir, help=REPORTS_HELP)
    lp.add_argument("--json", action="store_true", help="last stdout line: one JSON object")
    lp.set_defaults(func=cmd_loop)


def cmd_loop(args: argparse.Namespace) -> int:
    from evalkit import api
    from trainloop.loop import run

    cfg = config_from_args(args)
    outcome, report = run(cfg, api.open_store(args.store), args.reports_dir)
    ran = ", ".join(f"r{r}:{s}" for r, s in outcome.ran) or "nothing (all steps were stored)"
    print(f"loop {outcome.loop_id}: ran {ran}")
    print(f"loop report: {report}")
    if args.json:
        print(json.dumps({"loop_id": outcome.loop_id, "report": report, "ran": outcome.ran, "reused": outcome.reused}))
    return 0


def config_from_args(args: argparse.Namespace) -> LoopConfig:
    """Defaults, then ``--config`` YAML, then the flags given (``--plan``: round 0 only)."""
    from trainloop.config import load_config

    overrides = {f.name: getattr(args, f.name) for f in cli_fields()}
    if getattr(args, "plan", False):
        overrides["rounds"] = 0
    return load_config(args.config, overrides)


# ------------------------------------------------------------------------ flags from LoopConfig
def cli_fields() -> list[Field[Any]]:
    """The LoopConfig fields that are command-line flags (not the nested configs, not ``cli: False``)."""
    return [f for f in fields(LoopConfig) if f.name not in NESTED and f.metadata.get("cli", True)]


def flag_name(f: Field[Any]) -> str:
    return str(f.metadata.get("flag") or "--" + f.name.replace("_", "-"))


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One option per :func:`cli_fields` field; its help ends with the dataclass default."""
    hints = typing.get_type_hints(LoopConfig)
    for f in cli_fields():
        kind = _base_type(hints[f.name])
        default = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
        env = f.metadata.get("env")
        shown = _show(default)
        if env:
            shown = f"${env}, else {shown}"
        text = f"{f.metadata.get('help', '')} (default: {shown})".replace("%", "%%")
        flag = flag_name(f)
        kw: dict[str, Any] = {"dest": f.name, "help": text, "default": os.environ.get(env) if env else None}
        if kind is bool:
            kw["action"] = argparse.BooleanOptionalAction if default else "store_true"
        else:
            kw["type"] = str if kind is tuple else kind
            if f.metadata.get("choices"):
                kw["choices"] = list(f.metadata["choices"])  # argparse shows them: --control {random}
            else:
                kw["metavar"] = flag.lstrip("-").upper().replace("-", "_")
        parser.add_argument(flag, **kw)


def _base_type(tp: Any) -> type:
    """The flag's type: ``int`` -> int, ``str | None`` -> str, ``tuple[str, ...]`` -> tuple (comma-separated)."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(inner) != 1:
            raise TypeError(f"LoopConfig: cannot make a flag of type {tp}")
        return _base_type(inner[0])
    if typing.get_origin(tp) is tuple:
        return tuple
    if tp in (bool, int, float, str):
        return tp
    raise TypeError(f"LoopConfig: cannot make a flag of type {tp} (mark the field cli=False)")


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)
