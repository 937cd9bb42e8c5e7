"""The ``evalkit`` command line: one module per group of commands, plus commands other packages add.

Contract relied on by the Makefile, later issues and outside checks: user errors print one
line ``evalkit: error: ...`` to stderr and exit 2; with ``--json`` the last line on stdout is
one JSON object. Thread/offline settings are applied before torch can be imported.

Each command module has ``register(subparsers)``, which adds its subparsers and sets ``func``;
the built-ins are listed in :data:`BUILTIN`. Other packages add commands the same way through
the ``evalkit.commands`` entry-point group (:data:`evalkit.registry.COMMANDS`): ``trainloop``
contributes ``loop`` so, and nothing in ``evalkit`` imports ``trainloop``. A plugin that fails to
import does not break the other commands: its name stays, and running it prints why.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Iterable

from evalkit.env import configure_threads

configure_threads()  # before anything imports torch

from evalkit.errors import EvalkitError  # noqa: E402
from evalkit.registry import COMMANDS  # noqa: E402

#: Built-in command modules, in the order ``evalkit --help`` lists them.
BUILTIN = ("evalkit.cli.eval_cmd", "evalkit.cli.store_cmds", "evalkit.cli.compare_cmds", "evalkit.cli.judge_cmd",
           "evalkit.cli.analysis_cmds", "evalkit.cli.score_cmd", "evalkit.cli.history_cmd")


def _broken_plugin(name: str, why: str) -> Callable[[argparse.Namespace], int]:
    def run(_: argparse.Namespace) -> int:
        raise EvalkitError(f"command '{name}' could not be loaded: {why}")

    return run


def build_parser(plugins: Iterable[str] | None = None) -> argparse.ArgumentParser:
    """The full parser. ``plugins``: the plugin commands to import (default: all); the others are
    listed by name only, so ``evalkit runs`` does not pay for importing the training loop."""
    from evalkit.store import default_store_path

    p = argparse.ArgumentParser(prog="evalkit", description="Evaluation-first harness for LLM post-training.")
    p.add_argument("--store", default=default_store_path(), help="run store (SQLite file); env EVALKIT_STORE")
    sub = p.add_subparsers(dest="command", required=True)
    for module in BUILTIN:
        importlib.import_module(module).register(sub)
    wanted = set(COMMANDS.names() if plugins is None else plugins)
    for name in COMMANDS.names():
        if name not in wanted:
            package = (COMMANDS.place(name) or "?").split(":")[0].split(".")[0]
            _placeholder(sub, name, f"(from {package}: evalkit {name} -h)", None)
            continue
        try:
            COMMANDS.get(name)(sub)
        except EvalkitError as exc:  # a broken plugin: its command says why, the others still work
            _placeholder(sub, name, f"(unavailable: {exc})", str(exc))
    return p


def _placeholder(sub: argparse._SubParsersAction, name: str, help: str, broken: str | None) -> None:
    stub = sub.add_parser(name, help=help, add_help=False)
    stub.add_argument("rest", nargs=argparse.REMAINDER)
    stub.set_defaults(func=_broken_plugin(name, broken or "it was not loaded"))


def _requested_command(argv: list[str] | None) -> str | None:
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--store")
    pre.add_argument("command", nargs="?")
    known, _ = pre.parse_known_args(sys.argv[1:] if argv is None else argv)
    return known.command


def main(argv: list[str] | None = None) -> int:
    command = _requested_command(argv)
    parser = build_parser(plugins=[command] if command in COMMANDS.names() else [])
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except EvalkitError as exc:
        print(f"evalkit: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("evalkit: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `evalkit show latest | head`
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
