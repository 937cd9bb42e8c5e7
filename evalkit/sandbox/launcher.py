"""Building the command line that starts a run: launcher config, bwrap arguments, binds, env.

Why everything is computed here, in the parent, and handed over as one JSON argument: the
launcher (:mod:`.stages`) runs isolated from the host's environment (``python -I -S``), so
the only way anything reaches it is this config, which is easy to inspect and test.
"""

from __future__ import annotations

import json
import os
import sys

from evalkit.sandbox.limits import SandboxLimits
from evalkit.sandbox.plan import Plan
from evalkit.sandbox.procfs import pids_of_uid
from evalkit.sandbox.rundir import Run
from evalkit.sandbox.stages import BOOTSTRAP, LAUNCHER

__all__ = ["ETC_FILES", "SYSTEM_DIRS", "child_env", "command", "launcher_config"]

ETC_FILES = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "timezone", "passwd",
             "group", "nsswitch.conf", "hosts", "host.conf", "os-release", "alternatives",
             "mime.types")
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")


def launcher_config(run: Run, plan: Plan, limits: SandboxLimits) -> dict:
    namespaced = plan.mechanism != "rlimits"
    return {
        "unshare": plan.mechanism == "unshare",
        "network": bool(limits.network),
        "newroot": os.path.join(run.rundir, "root"),
        "ro_binds": _ro_binds(),
        "symlinks": _symlinks(),
        "tmpfs_bytes": limits.tmpfs_bytes,
        "cwd": "/tmp" if namespaced else os.path.join(run.rundir, "work"),
        "cpu_s": int(limits.cpu_s),
        "as_bytes": limits.address_space_bytes,
        "fsize_bytes": limits.max_file_bytes,
        "nproc": _nproc_limit(limits, run.uid),
        "uid": run.uid,
        "cap_last_cap": _cap_last_cap(),
        "python": sys.executable,
        "bootstrap": BOOTSTRAP,
        "nonce_fd": run.fds["nonce_r"],
        "report_fd": run.fds["report_w"],
        "prog_fd": run.fds["prog"],
    }


def _nproc_limit(limits: SandboxLimits, uid: int | None) -> int:
    """RLIMIT_NPROC counts every process of the real uid, so a shared uid needs headroom."""
    if uid is not None:
        return limits.max_processes
    return limits.max_processes + len(pids_of_uid(os.getuid()))


def _cap_last_cap() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as fh:
            return int(fh.read())
    except OSError:
        return 63


def _python_roots() -> list[str]:
    """Directories that hold the interpreter and its stdlib/site-packages (venv and base)."""
    exe = os.path.realpath(sys.executable)
    candidates = {sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix,
                  os.path.dirname(os.path.dirname(exe))}
    candidates |= {os.path.realpath(p) for p in list(candidates)}
    return sorted(p for p in candidates if os.path.isdir(p))


def _ro_binds() -> list[str]:
    binds = [d for d in SYSTEM_DIRS if os.path.isdir(d) and not os.path.islink(d)]
    binds += [f"/etc/{name}" for name in ETC_FILES if os.path.exists(f"/etc/{name}")]
    for root in _python_roots():
        if not any(root == b or root.startswith(b.rstrip("/") + "/") for b in binds):
            binds.append(root)
    return binds


def _symlinks() -> list[tuple[str, str]]:
    return [(d, os.readlink(d)) for d in SYSTEM_DIRS if os.path.islink(d)]


def child_env(home: str) -> dict:
    """Scrubbed environment: nothing from the parent except what is rebuilt here."""
    path = ":".join(dict.fromkeys([os.path.dirname(sys.executable),
                                   "/usr/local/bin", "/usr/bin", "/bin"]))
    return {
        "PATH": path, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
        "PYTHONHASHSEED": "0", "PYTHONIOENCODING": "utf-8", "PYTHONDONTWRITEBYTECODE": "1",
        "HOME": home, "TMPDIR": home, "USER": "sandbox", "LOGNAME": "sandbox",
        "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
    }


def command(plan: Plan, config: dict) -> list[str]:
    launcher = [sys.executable, "-I", "-S", "-B", "-c", LAUNCHER, json.dumps(config)]
    if plan.mechanism != "bwrap":
        return launcher
    return [plan.bwrap, *_bwrap_args(plan, config), "--", *launcher]


def _bwrap_args(plan: Plan, config: dict) -> list[str]:
    """Namespaces and a minimal read-only root; as root no user namespace (see
    :mod:`evalkit.sandbox.runner`: the launcher drops to a fresh uid instead)."""
    args = ["--unshare-ipc", "--unshare-pid", "--unshare-uts", "--unshare-cgroup-try",
            "--die-with-parent", "--new-session"]
    if not config["network"]:
        args += ["--unshare-net"]
    if os.geteuid() != 0:
        args += ["--unshare-user"]
    size = str(config["tmpfs_bytes"])
    # Writable mounts first, so that an interpreter installed under /tmp is bound on top.
    args += ["--proc", "/proc", "--dev", "/dev",
             "--perms", "1777", "--size", size, "--tmpfs", "/tmp",
             "--perms", "1777", "--size", size, "--tmpfs", "/dev/shm"]
    # bwrap creates missing parents as 0700, which the dropped uid could not traverse.
    for parent in _ancestors(config["ro_binds"]):
        if parent not in ("/tmp", "/dev", "/proc"):
            args += ["--perms", "0755", "--dir", parent]
    for src in config["ro_binds"]:
        args += ["--ro-bind", src, src]
    for name, target in config["symlinks"]:
        args += ["--symlink", target, name]
    args += ["--remount-ro", "/", "--chdir", "/tmp"]
    return args


def _ancestors(paths: list[str]) -> list[str]:
    """Every proper ancestor directory of ``paths`` (except /), parents before children."""
    out: set[str] = set()
    for path in paths:
        parent = os.path.dirname(path)
        while parent not in ("/", ""):
            out.add(parent)
            parent = os.path.dirname(parent)
    return sorted(out, key=lambda p: (p.count("/"), p))
