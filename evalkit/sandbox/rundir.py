"""Per-run scratch state owned by the parent: private directory, pipes, nonce, fresh uid.

Why the parent owns all of it: the run's directory (0700) is never visible inside the sandbox,
the nonce travels only through a pipe (never disk, argv or environment), and everything is
released by :func:`cleanup` whatever happened to the program.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import tempfile
from dataclasses import dataclass, field

from evalkit.sandbox.plan import UID_RANGE, Plan
from evalkit.sandbox.procfs import pids_of_uid
from evalkit.sandbox.result import TAIL_BYTES

__all__ = ["Run", "cleanup", "prepare", "read_report", "tail"]


@dataclass
class Run:
    """Per-run scratch state owned by the parent."""

    rundir: str
    uid: int | None
    nonce: bytes
    fds: dict = field(default_factory=dict)


def prepare(source: str, plan: Plan) -> Run:
    """Private directory (0700, never visible inside), program file, pipes, fresh uid."""
    rundir = tempfile.mkdtemp(prefix="evalkit-sbx-")
    run = Run(rundir=rundir, uid=_fresh_uid() if plan.uid_drop else None,
              nonce=secrets.token_hex(16).encode())
    try:
        prog = os.path.join(rundir, "program.py")
        with open(prog, "w", encoding="utf-8", errors="surrogateescape") as fh:
            fh.write(source)
        if plan.mechanism == "unshare":
            os.mkdir(os.path.join(rundir, "root"), 0o755)
        if plan.mechanism == "rlimits":
            work = os.path.join(rundir, "work")
            os.mkdir(work, 0o700)
            if run.uid is not None:
                os.chown(work, run.uid, run.uid)
        run.fds["prog"] = os.open(prog, os.O_RDONLY)
        run.fds["nonce_r"], nonce_w = os.pipe()
        os.write(nonce_w, run.nonce)
        os.close(nonce_w)
        run.fds["report_r"], run.fds["report_w"] = os.pipe()
        os.set_blocking(run.fds["report_r"], False)
    except BaseException:
        cleanup(run)
        raise
    return run


def _fresh_uid() -> int:
    """A uid no process uses now, so RLIMIT_NPROC and the final sweep cover exactly this run."""
    for _ in range(100):
        uid = secrets.randbelow(UID_RANGE[1] - UID_RANGE[0]) + UID_RANGE[0]
        try:
            pwd.getpwuid(uid)
            continue
        except KeyError:
            pass
        if not pids_of_uid(uid):
            return uid
    raise RuntimeError("could not find an unused uid")


def read_report(fd: int) -> bytes:
    chunks, total = [], 0
    while total < 4096:
        try:
            chunk = os.read(fd, 4096 - total)
        except BlockingIOError:
            break
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)


def tail(path: str) -> str:
    with open(path, "rb") as fh:
        size = fh.seek(0, os.SEEK_END)
        fh.seek(max(0, size - TAIL_BYTES))
        data = fh.read(TAIL_BYTES)
    return data.decode("utf-8", "replace")


def cleanup(run: Run) -> None:
    for fd in run.fds.values():
        try:
            os.close(fd)
        except OSError:
            pass
    run.fds.clear()
    shutil.rmtree(run.rundir, ignore_errors=True)
