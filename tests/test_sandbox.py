"""Hostile-code tests for evalkit.sandbox.

Every hostile program must end as a non-pass with a reason, the harness must keep going, no
process of the run may survive it and nothing outside the run's private directory may change.
The whole module runs once per sandbox mechanism that works on this host (bwrap, our own
unshare launcher, rlimits), so the fallbacks are exercised wherever they are available; a
guarantee a mechanism does not claim (see ``sandbox_info()``) is skipped, never run unsafely.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import re
import secrets
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest

import evalkit
from evalkit.sandbox import SandboxLimits, reset_sandbox_cache, run_python, sandbox_info
from evalkit.sandbox.runner import ENV_OVERRIDE, MECHANISMS, UID_RANGE

FAST = SandboxLimits(wall_s=3, cpu_s=3, max_processes=32)
SHORT = SandboxLimits(wall_s=1.5, cpu_s=10, max_processes=16)


@pytest.fixture(scope="module", params=MECHANISMS)
def info(request):
    """Force one mechanism for the whole module; skip it where it does not work here."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(ENV_OVERRIDE, request.param)
        reset_sandbox_cache()
        try:
            found = sandbox_info()
        except RuntimeError as exc:
            pytest.skip(f"mechanism {request.param} unavailable here: {str(exc)[:160]}")
        yield found
    reset_sandbox_cache()


@pytest.fixture(autouse=True)
def leaves_nothing_behind(info):
    """After each test: no sandbox process alive, no run directory left over."""
    pattern = os.path.join(tempfile.gettempdir(), "evalkit-sbx-*")
    before = set(glob.glob(pattern))
    yield
    deadline = time.monotonic() + 3
    while _sandbox_processes() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _sandbox_processes() == []
    assert set(glob.glob(pattern)) - before == set()


def _sandbox_processes() -> list[int]:
    """Processes of a run: a sandbox uid, our scrubbed environment, or any descendant of us."""
    found = {p.pid for p in psutil.Process().children(recursive=True)}
    for proc in psutil.process_iter(["uids"]):
        try:
            uids = proc.info["uids"]
            if uids and any(UID_RANGE[0] <= u < UID_RANGE[1] for u in uids):
                found.add(proc.pid)
                continue
            env = proc.environ()
        except (psutil.Error, OSError):
            continue
        if env.get("LOGNAME") == "sandbox" and env.get("USER") == "sandbox":
            found.add(proc.pid)
    return sorted(found)


def _require(info: dict, key: str) -> None:
    if not info[key]:
        pytest.skip(f"{info['mechanism']} does not provide {key} on this host")


def _assert_failed(result, *statuses: str) -> None:
    assert not result.passed, result
    assert result.status in (statuses or ("failed", "timeout", "killed", "output_limit")), result
    assert result.reason, result


# ----------------------------------------------------------------------------- controls


def test_correct_program_passes(info):
    result = run_python("def add(a, b):\n    return a + b\n\nassert add(1, 2) == 3\nprint('ok')",
                        FAST)
    assert result.passed and result.status == "passed", result
    assert result.returncode == 0
    assert result.stdout_tail == "ok\n"
    assert result.duration_s < 2


def test_wrong_answer_fails_with_the_exception_as_reason(info):
    result = run_python("def add(a, b):\n    return a - b\n\nassert add(1, 2) == 3", FAST)
    _assert_failed(result, "failed")
    assert result.reason == "AssertionError"
    assert "Traceback" in result.stderr_tail


def test_sandbox_info_describes_the_mechanism(info):
    assert info["mechanism"] in MECHANISMS
    for key in ("uid_drop", "network_isolated", "pid_namespace", "private_filesystem",
                "contains_fork_bomb", "contains_kill"):
        assert isinstance(info[key], bool)
    if info["running_as_root"]:
        assert info["uid_drop"], "as root, every safe mechanism switches uid"


def test_program_runs_without_privileges(info):
    result = run_python("import os; print(os.getuid(), os.getgroups())", FAST)
    assert result.passed, result
    uid = int(result.stdout_tail.split()[0])
    if info["running_as_root"]:
        assert UID_RANGE[0] <= uid < UID_RANGE[1]


# ----------------------------------------------------------------------------- resources


def test_infinite_loop_times_out(info):
    result = run_python("while True:\n    pass", SHORT)
    _assert_failed(result, "timeout", "killed")
    assert result.duration_s < SHORT.wall_s + 1.5


def test_cpu_limit_kills(info):
    limits = SandboxLimits(wall_s=8, cpu_s=1)
    result = run_python("while True:\n    pass", limits)
    _assert_failed(result, "killed")
    assert "CPU" in result.reason
    assert result.duration_s < 4


def test_fork_bomb_is_contained(info):
    _require(info, "contains_fork_bomb")
    result = run_python("import os\nwhile True:\n    os.fork()", SHORT)
    _assert_failed(result)
    # The machine is still fine: a normal program right after passes quickly.
    after = run_python("print(sum(range(10)))", FAST)
    assert after.passed and after.duration_s < 2, after


def test_allocating_20_gb_fails(info):
    result = run_python("x = bytearray(20 * 1024 ** 3)\nprint(len(x))", FAST)
    _assert_failed(result, "failed", "killed")
    assert "MemoryError" in result.reason


def test_output_flood_is_cut_off(info):
    source = ("import sys\nchunk = 'x' * (1 << 20)\n"
              "for _ in range(100):\n    sys.stdout.write(chunk)\n")
    start = time.monotonic()
    result = run_python(source, FAST)
    _assert_failed(result, "output_limit")
    assert time.monotonic() - start < 5
    assert len(result.stdout_tail) <= 4096


def test_stderr_flood_is_cut_off(info):
    result = run_python("import os\nwhile True:\n    os.write(2, b'y' * 65536)", FAST)
    _assert_failed(result, "output_limit")


# ----------------------------------------------------------------------------- isolation


def test_writes_outside_the_sandbox_do_not_land(info, tmp_path):
    if not (info["private_filesystem"] or info["uid_drop"]):
        pytest.skip(f"{info['mechanism']} runs as this user on the host filesystem")
    outside_tmp = Path(tempfile.gettempdir()) / f"evalkit-escape-{secrets.token_hex(8)}"
    in_test_dir = tmp_path / "escaped.txt"
    in_project = Path(evalkit.__file__).parent / f"escape-{secrets.token_hex(8)}.txt"
    source = textwrap.dedent(f"""
        errors = []
        for target in ({str(outside_tmp)!r}, {str(in_project)!r}, {str(in_test_dir)!r}):
            try:
                with open(target, "w") as fh:
                    fh.write("pwned")
            except OSError as exc:
                errors.append(repr(exc))
        if errors:
            raise OSError("; ".join(errors))
    """)
    result = run_python(source, FAST)
    _assert_failed(result, "failed")
    assert "Error" in result.reason
    for path in (outside_tmp, in_test_dir, in_project):
        assert not path.exists(), path
    assert list(tmp_path.iterdir()) == []


def test_secrets_are_not_visible(info, tmp_path, monkeypatch):
    token = secrets.token_hex(12)
    monkeypatch.setenv("EVALKIT_TEST_SECRET_TOKEN", token)
    monkeypatch.setenv("HTTPS_PROXY", f"http://proxy-{token}.invalid:3128")
    secret_file = tmp_path / "id_rsa"
    secret_file.write_text(f"-----BEGIN KEY----- {token}")
    secret_file.chmod(0o600)
    source = textwrap.dedent(f"""
        import os
        print(dict(os.environ))
        for d in (os.path.expanduser("~/.ssh"), "/root/.ssh", {str(tmp_path)!r}):
            try:
                print(d, os.listdir(d))
            except OSError as exc:
                print(d, exc)
        print(open({str(secret_file)!r}).read())
    """)
    result = run_python(source, FAST)
    _assert_failed(result, "failed")
    assert token not in result.stdout_tail + result.stderr_tail
    assert "EVALKIT_TEST_SECRET_TOKEN" not in result.stdout_tail
    assert "HTTPS_PROXY" not in result.stdout_tail
    env_line = result.stdout_tail.splitlines()[0]
    assert not re.search(r"_(TOKEN|KEY|SECRET)'", env_line)


def test_network_is_unreachable(info):
    _require(info, "network_isolated")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        listener.setblocking(False)
        port = listener.getsockname()[1]
        source = textwrap.dedent(f"""
            import socket
            s = socket.create_connection(("127.0.0.1", {port}), timeout=2)
            s.sendall(b"exfiltrated")
        """)
        result = run_python(source, FAST)
        _assert_failed(result, "failed")
        assert re.search(r"ConnectionRefused|Network is unreachable|OSError|timed out",
                         result.reason), result.reason
        with pytest.raises(BlockingIOError):
            listener.accept()


def test_cannot_kill_the_harness_or_its_neighbours(info):
    _require(info, "contains_kill")
    # Never run `kill -1` unless the program provably is not root on the host.
    probe = run_python("import os; print(os.getuid(), os.getpid())", FAST)
    uid, pid = (int(x) for x in probe.stdout_tail.split())
    assert uid != 0 or (info["pid_namespace"] and pid < 10), probe
    neighbour = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        source = textwrap.dedent(f"""
            import os, signal, subprocess
            attempts = [
                lambda: os.kill(os.getppid(), signal.SIGKILL),
                lambda: os.kill({os.getpid()}, signal.SIGKILL),
                lambda: os.killpg({os.getpgid(0)}, signal.SIGKILL),
                lambda: os.kill({neighbour.pid}, signal.SIGKILL),
                lambda: os.kill(-1, signal.SIGKILL),
                lambda: subprocess.run(["kill", "-9", "-1"]),
            ]
            for attempt in attempts:
                try:
                    attempt()
                except Exception as exc:
                    print(repr(exc))
            raise SystemExit("still here")
        """)
        result = run_python(source, FAST)
        _assert_failed(result, "failed", "killed")
        time.sleep(0.2)
        assert neighbour.poll() is None, "a process outside the sandbox was killed"
        assert psutil.pid_exists(os.getpid())
    finally:
        neighbour.kill()
        neighbour.wait()


def test_background_children_do_not_survive(info):
    source = textwrap.dedent("""
        import os, subprocess, sys
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                         start_new_session=True)
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                import time
                time.sleep(60)
            os._exit(0)
        print("parent done")
    """)
    result = run_python(source, FAST)
    assert result.passed, result  # legitimate program; the fixture checks nothing survived


# ---------------------------------------------------------------------- "passed" means finished

PROBLEM = "def inc(x):\n    return x + 1\n"
TEST = "\n\ndef check(candidate):\n    assert candidate(1) == 3\n\ncheck(inc)"


@pytest.mark.parametrize("trick", [
    "exit(0)", "quit()", "import sys; sys.exit(0)", "raise SystemExit(0)",
    "import os; os._exit(0)", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)",
])
def test_early_exit_is_not_a_pass(info, trick):
    result = run_python(PROBLEM + trick + "\n" + TEST, FAST)
    _assert_failed(result, "failed", "killed")
    if "SIGKILL" not in trick:
        assert "early exit" in result.reason or "status" in result.reason, result.reason


@pytest.mark.parametrize("completion", [
    # Define a lenient check before the real one (the real test redefines it).
    "def check(candidate):\n    return None\n",
    # Put a lenient check into builtins (module globals shadow it).
    "import builtins\nbuiltins.check = lambda candidate: None\n",
    # Redefine check, call it, and leave before the real test runs.
    "def check(candidate):\n    pass\ncheck(inc)\nimport os\nos._exit(0)\n",
    # Swallow the real test into a string literal: a syntax error, not a pass.
    "check = lambda candidate: None\n_ = '''\n",
])
def test_redefining_check_is_not_a_pass(info, completion):
    result = run_python(PROBLEM + completion + TEST, FAST)
    _assert_failed(result, "failed")


def test_nonce_is_not_in_source_argv_env_or_files(info):
    """A naive forger: harvest every 32-hex string it can see, write it everywhere, exit 0."""
    source = textwrap.dedent(r"""
        import os, re, sys
        seen = open(__file__).read() + repr(sys.argv) + repr(dict(os.environ))
        for path in ("/proc/self/cmdline", "/proc/self/environ"):
            try:
                seen += open(path, "rb").read().decode("latin-1")
            except OSError:
                pass
        for name in os.listdir("."):
            try:
                seen += open(name, errors="replace").read()
            except OSError:
                pass
        for candidate in set(re.findall(r"[0-9a-f]{32}", seen)):
            for fd in range(3, 64):
                try:
                    os.write(fd, candidate.encode())
                except OSError:
                    pass
        os._exit(0)
    """)
    result = run_python(source, FAST)
    _assert_failed(result, "failed")


# ----------------------------------------------------------------------------- the harness goes on


def test_batch_keeps_going_and_runs_do_not_interfere(info):
    programs = ["while True:\n    pass", "x = bytearray(20 * 1024 ** 3)",
                "print('ok')", "import sys; sys.exit(0)", "print('ok again')"]
    if info["contains_fork_bomb"]:
        programs.insert(1, "import os\nwhile True:\n    os.fork()")
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(lambda src: run_python(src, SHORT), programs))
    verdicts = {src: r.passed for src, r in zip(programs, results, strict=True)}
    assert verdicts == {src: src.startswith("print") for src in programs}, results


def test_limits_are_validated():
    with pytest.raises(ValueError):
        SandboxLimits(wall_s=0)
    with pytest.raises(ValueError):
        SandboxLimits(max_processes=0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        SandboxLimits().wall_s = 5
