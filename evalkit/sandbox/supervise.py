"""Starting a run, watching it, and making sure nothing of it survives.

Why it is this careful: the program is hostile by assumption. Its output goes to files (never
pipes, which it could fill to block us) that are checked while it runs; the launcher is not
reaped until its group has been killed, so its pid cannot be reused under us; and afterwards
every process of the run's uid is killed and, for the ``rlimits`` mechanism, every file that
uid left in the host's shared temporary directories is deleted.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import tempfile
import time

from evalkit.sandbox.launcher import child_env, command, launcher_config
from evalkit.sandbox.limits import SandboxLimits
from evalkit.sandbox.plan import Plan
from evalkit.sandbox.procfs import alive, children, pids_of_uid
from evalkit.sandbox.rundir import Run

__all__ = ["launch_and_supervise"]


def launch_and_supervise(run: Run, plan: Plan, limits: SandboxLimits, out, err):
    """Start the run, wait for it under the limits, kill its tree: ``(outcome, returncode)``.

    outcome is "exited", "output_limit" or "timeout".
    """
    config = launcher_config(run, plan, limits)
    argv = command(plan, config)
    pass_fds = (run.fds["nonce_r"], run.fds["report_w"], run.fds["prog"])
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                            pass_fds=pass_fds, env=child_env(config["cwd"]),
                            cwd=run.rundir, start_new_session=True, close_fds=True)
    for key in ("nonce_r", "report_w", "prog"):
        os.close(run.fds.pop(key))
    try:
        outcome = _supervise(proc, limits, out, err)
    finally:
        _kill_tree(proc, run.uid)
        if plan.mechanism == "rlimits" and run.uid is not None:
            _remove_files_of_uid(run.uid)
    return outcome, proc.returncode


def _supervise(proc: subprocess.Popen, limits: SandboxLimits, out, err) -> str:
    """Wait for exit without reaping (so the pid cannot be reused before the group kill),
    checking the output files every few milliseconds. A pidfd wakes us the moment the
    launcher exits; without one (old kernels) we poll."""
    deadline = time.monotonic() + limits.wall_s
    waiter = _ExitWaiter(proc.pid)
    step = 0.002
    try:
        while True:
            if waiter.exited():
                return "exited"
            if max(os.fstat(out.fileno()).st_size,
                   os.fstat(err.fileno()).st_size) > limits.max_output_bytes:
                return "output_limit"
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return "timeout"
            waiter.wait(min(step, remaining))
            step = min(step * 1.5, 0.05)
    finally:
        waiter.close()


class _ExitWaiter:
    """Exit detection for one child: pidfd + poll where available, else sleep."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.fd: int | None = None
        try:
            self.fd = os.pidfd_open(pid)
        except (AttributeError, OSError):
            self.fd = None

    def exited(self) -> bool:
        try:
            return os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
        except ChildProcessError:
            return True

    def wait(self, seconds: float) -> None:
        if self.fd is None:
            time.sleep(seconds)
            return
        poller = select.poll()
        poller.register(self.fd, select.POLLIN)
        poller.poll(max(0, int(seconds * 1000)))

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _kill_tree(proc: subprocess.Popen, uid: int | None) -> None:
    """Kill the launcher's group, reap it, then every process still owned by the run's uid.

    Processes inside a pid namespace die with its init (bwrap's --die-with-parent and our
    PR_SET_PDEATHSIG); the uid sweep is the backstop and also covers the rlimits mechanism.
    """
    inits = children(proc.pid)  # the pid namespace's init, while bwrap/the relay still lives
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    for pid in inits:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    proc.wait()
    deadline = time.monotonic() + 5.0
    # An init is only reaped (or a zombie) after the kernel has killed its whole namespace.
    while any(alive(pid) for pid in inits) and time.monotonic() < deadline:
        time.sleep(0.005)
    if uid is None:
        return
    while True:
        pids = pids_of_uid(uid)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"sandbox processes of uid {uid} survive SIGKILL: {pids}")
        time.sleep(0.01)


def _remove_files_of_uid(uid: int) -> None:
    """rlimits mechanism only: the program shares the host's world-writable directories, so
    delete whatever its uid left there (top level and inside world-writable subdirectories)."""
    bases = {tempfile.gettempdir(), "/tmp", "/var/tmp", "/dev/shm"}
    for base in sorted(bases):
        for entry in _scandir(base):
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if st.st_uid == uid:
                _remove(entry.path)
            elif entry.is_dir(follow_symlinks=False) and st.st_mode & 0o002:
                for inner in _scandir(entry.path):
                    try:
                        if inner.stat(follow_symlinks=False).st_uid == uid:
                            _remove(inner.path)
                    except OSError:
                        continue


def _scandir(path: str) -> list[os.DirEntry]:
    try:
        with os.scandir(path) as it:
            return list(it)
    except OSError:
        return []


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            os.unlink(path)
        except OSError:
            pass
