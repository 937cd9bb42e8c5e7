"""Sandboxed execution of untrusted Python.

See :mod:`evalkit.sandbox.runner` for the mechanisms, the threat model and residual risks.
"""

from __future__ import annotations

from evalkit.sandbox.limits import SandboxLimits
from evalkit.sandbox.runner import ExecResult, reset_sandbox_cache, run_python, sandbox_info

__all__ = ["ExecResult", "SandboxLimits", "reset_sandbox_cache", "run_python", "sandbox_info"]
