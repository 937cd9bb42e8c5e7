"""Flags shared by several commands, each defined once (name, default, help)."""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from evalkit.store import RunStore


def add_runtime(p: argparse.ArgumentParser, *, dtype_default: str = "auto") -> None:
    """``--device``/``--dtype``/``--batch-size``: resolved once, in :func:`evalkit.models.handle.resolve_runtime`."""
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:N] (default: auto = cuda when present)")
    p.add_argument("--dtype", default=dtype_default,
                   help=f"auto | bfloat16 | float32 | float16 (default: {dtype_default}; auto = bf16 on GPUs and "
                        "bf16-capable CPUs, else float32)")
    p.add_argument("--batch-size", type=int, default=8, help="rows per forward pass (default: 8)")


def add_data_dir(p: argparse.ArgumentParser, help: str = "local mirror of the datasets") -> None:
    p.add_argument("--data-dir", default=os.environ.get("EVALKIT_DATA_DIR"), help=f"{help}; env EVALKIT_DATA_DIR")


def add_reports_dir(p: argparse.ArgumentParser) -> None:
    """``--reports-dir``: default from :func:`evalkit.env.reports_dir_default` ($EVALKIT_REPORTS, else ./reports), absolute."""
    from evalkit.env import REPORTS_HELP, absolute_reports_dir, reports_dir_default

    p.add_argument("--reports-dir", default=reports_dir_default(), type=absolute_reports_dir, help=REPORTS_HELP)


def add_json(p: argparse.ArgumentParser, help: str = "last stdout line: one JSON object") -> None:
    p.add_argument("--json", action="store_true", help=help)


def store(args: argparse.Namespace, create: bool = True) -> "RunStore":
    """The run store named by ``--store``; reading commands pass ``create=False`` (a missing store is an error)."""
    from evalkit.api import open_store

    return open_store(args.store, create=create)
