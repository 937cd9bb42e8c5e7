"""Sandboxed execution of untrusted Python.

See :mod:`evalkit.sandbox.runner` for the mechanisms, the threat model and residual risks.

Modules, in the order a run passes through them:

``runner``     the public entry points (:func:`run_python`, :func:`sandbox_info`) and the
               per-process choice of mechanism
``plan``       the mechanism candidates, the probe that checks them, and the choice
``limits``     :class:`SandboxLimits`
``rundir``     per-run scratch state: private directory, nonce and report pipes, fresh uid
``launcher``   the launcher's config, the bwrap arguments, read-only binds and environment
``stages``     the launcher and bootstrap programs that run inside the sandbox (as strings)
``supervise``  starting the run, wall-clock and output caps, killing the tree, the uid sweep
``procfs``     reading /proc: children, liveness, the processes of a uid
``result``     :class:`ExecResult` and the rules that classify a run
"""

from __future__ import annotations

from evalkit.sandbox.limits import SandboxLimits
from evalkit.sandbox.runner import ExecResult, reset_sandbox_cache, run_python, sandbox_info

__all__ = ["ExecResult", "SandboxLimits", "reset_sandbox_cache", "run_python", "sandbox_info"]
