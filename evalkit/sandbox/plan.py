"""Which sandbox mechanism to use on this host: the candidates, the probe, the choice.

Why probe instead of trusting the configuration: a namespace mechanism can start and yet not
isolate (a kernel or container that ignores a flag), so each candidate runs a small probe
program and is accepted only if the facts it reports show the isolation really happened.
The mechanisms and what each guarantees are described in :mod:`evalkit.sandbox.runner`.

This module does not run programs itself: :func:`choose_plan` is handed the function that
performs one sandboxed run, so that the layers below (launcher, supervisor) can depend on
:class:`Plan` without depending on the probe.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass

from evalkit.sandbox.limits import SandboxLimits
from evalkit.sandbox.result import ExecResult

__all__ = ["ENV_OVERRIDE", "MECHANISMS", "PROBE_PROGRAM", "UID_RANGE", "UNSAFE_OPT_IN",
           "Executor", "Plan", "choose_plan"]

MECHANISMS = ("bwrap", "unshare", "rlimits")
ENV_OVERRIDE = "EVALKIT_SANDBOX"  # force a mechanism, e.g. to test the fallbacks
UNSAFE_OPT_IN = "EVALKIT_SANDBOX_UNSAFE"  # "1" allows rlimits without a uid switch
# Fresh uids are drawn from here: far above human users and typical subuid ranges.
UID_RANGE = (1_000_000_000, 2_000_000_000)


@dataclass(frozen=True)
class Plan:
    """How runs are launched on this host; chosen once by probing."""

    mechanism: str
    uid_drop: bool
    bwrap: str | None = None


# Runs one program under a plan: ``execute(source, limits, plan)``.
Executor = Callable[[str, SandboxLimits, Plan], ExecResult]


def _candidates() -> list[Plan]:
    """Mechanisms to try, best first, honouring the EVALKIT_SANDBOX override."""
    root = os.geteuid() == 0
    bwrap = shutil.which("bwrap")
    plans = []
    if bwrap:
        plans.append(Plan("bwrap", uid_drop=root, bwrap=bwrap))
    plans.append(Plan("unshare", uid_drop=root))
    if root:
        plans.append(Plan("rlimits", uid_drop=True))
    if os.environ.get(UNSAFE_OPT_IN) == "1":
        # No way to stop `kill -1` or a fork bomb (as root, the whole machine): opt-in only.
        plans.append(Plan("rlimits", uid_drop=False))
    forced = os.environ.get(ENV_OVERRIDE, "").strip()
    if forced:
        if forced not in MECHANISMS:
            raise ValueError(f"{ENV_OVERRIDE}={forced!r}; expected one of {MECHANISMS}")
        plans = [p for p in plans if p.mechanism == forced]
    return plans


PROBE_PROGRAM = """
import json, os, socket
print(json.dumps({"uid": os.getuid(), "pid": os.getpid(),
                  "ifaces": sorted(n for _, n in socket.if_nameindex()),
                  "host_tmp_visible": os.path.exists(%r)}))
"""


def choose_plan(execute: Executor) -> tuple[Plan, dict]:
    """The best candidate whose probe shows real isolation, and its :func:`sandbox_info`."""
    errors: dict[str, str] = {}
    marker_fd, marker = tempfile.mkstemp(prefix="evalkit-probe-")
    try:
        for plan in _candidates():
            result = execute(PROBE_PROGRAM % marker, SandboxLimits(wall_s=30, cpu_s=30), plan)
            found = _judge_probe(plan, result, errors)
            if found is not None:
                return plan, _describe(plan, found, errors)
    finally:
        os.close(marker_fd)
        os.unlink(marker)
    raise RuntimeError(
        f"no safe sandbox mechanism works on this host ({errors}). Install bubblewrap "
        f"(Debian: apt-get install bubblewrap), or allow user namespaces; as a last resort "
        f"{UNSAFE_OPT_IN}=1 runs programs with rlimits only, which cannot stop them from "
        f"killing or exhausting your other processes.")


def _judge_probe(plan: Plan, result: ExecResult, errors: dict) -> dict | None:
    """The probe's facts when ``plan`` works, else None (and the reason goes to ``errors``)."""
    label = plan.mechanism + ("+uid" if plan.uid_drop else "")
    if not result.passed:
        errors[label] = f"{result.status}: {result.reason}"
        return None
    facts = json.loads(result.stdout_tail.strip().splitlines()[-1])
    problem = _probe_problem(plan, facts)
    if problem:
        errors[label] = problem
        return None
    return facts


def _probe_problem(plan: Plan, facts: dict) -> str:
    """A namespace mechanism that did not actually isolate is rejected, not trusted."""
    if plan.uid_drop and facts["uid"] < UID_RANGE[0]:
        return f"uid switch did not happen (uid {facts['uid']})"
    if plan.mechanism != "rlimits":
        if set(facts["ifaces"]) - {"lo"}:
            return f"network namespace not isolated: {facts['ifaces']}"
        if facts["pid"] > 10:
            return f"pid namespace not in effect (pid {facts['pid']})"
        if facts["host_tmp_visible"]:
            return "the host's /tmp is visible inside"
    return ""


def _describe(plan: Plan, facts: dict, errors: dict) -> dict:
    namespaced = plan.mechanism != "rlimits"
    root = os.geteuid() == 0
    notes = []
    if not namespaced:
        notes.append("no namespaces: the program shares the host's network, /tmp and pids")
    if root and not plan.uid_drop:
        notes.append("runs as root without a uid switch: RLIMIT_NPROC is not enforced")
    if not root and not namespaced:
        notes.append("runs as the invoking user and can signal the user's other processes")
    return {
        "mechanism": plan.mechanism,
        "uid_drop": plan.uid_drop,
        "network_isolated": not (set(facts["ifaces"]) - {"lo"}),
        "pid_namespace": namespaced,
        "private_filesystem": namespaced and not facts["host_tmp_visible"],
        "contains_fork_bomb": plan.uid_drop or not root,
        "contains_kill": plan.uid_drop or namespaced,
        "running_as_root": root,
        "bwrap": plan.bwrap,
        "python": sys.executable,
        "notes": notes,
        "probe_errors": errors,
    }
