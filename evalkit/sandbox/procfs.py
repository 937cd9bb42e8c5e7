"""Reading the process table from /proc: children, liveness, and who owns what.

Why /proc and not signals or psutil: the supervisor must find every process of a run's uid
(including ones that escaped the process group) and must tell a zombie from a live process,
without adding a dependency.
"""

from __future__ import annotations

import os

__all__ = ["alive", "children", "pids_of_uid"]


def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            return [int(x) for x in fh.read().split()]
    except OSError:
        return []


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2:][:1] != b"Z"


def pids_of_uid(uid: int) -> list[int]:
    """Live (non-zombie) processes whose real, effective or saved uid is ``uid``."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/status", "rb") as fh:
                text = fh.read().decode("ascii", "replace")
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
        uids = fields.get("Uid", "").split()
        if str(uid) in uids[:3] and not fields.get("State", "").strip().startswith("Z"):
            found.append(int(name))
    return found
