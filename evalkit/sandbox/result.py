"""What one sandboxed run amounts to: :class:`ExecResult` and the rules that classify it.

Why a separate module: the verdict must depend only on evidence the program cannot forge
(the report pipe's nonce, the exit status, the limits we imposed), and keeping those rules in
one small place makes it easy to check that nothing else decides "passed".
"""

from __future__ import annotations

import secrets
import signal
from dataclasses import asdict, dataclass

from evalkit.sandbox.limits import SandboxLimits

__all__ = ["ExecResult", "STATUSES", "TAIL_BYTES", "SIGNAL_HINTS", "classify"]

STATUSES = ("passed", "failed", "timeout", "killed", "output_limit", "error")
TAIL_BYTES = 4096
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


def classify(outcome: str, rc: int | None, report: bytes, nonce: bytes, over_output: bool,
             stderr_tail: str, limits: SandboxLimits) -> tuple[str, str]:
    """Turn what happened into (status, reason). Order matters: limits before verdicts.

    ``report`` is what the stages wrote to the report pipe: ``L`` once the launcher runs,
    then ``E<message>`` if its set-up failed, or ``B`` once the bootstrap runs followed by
    the nonce if and only if the program returned normally (see :mod:`.stages`).
    """
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
