"""Resource limits for one sandboxed program run.

Why a frozen dataclass: the same limits object is shared by every worker thread of a scoring
run and is recorded next to the scores, so it must not change under anyone's feet.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

GIB = 1024**3
MIB = 1024**2


@dataclass(frozen=True)
class SandboxLimits:
    """What one program may use before it is stopped.

    wall_s: wall-clock seconds before the whole process tree is killed (status "timeout").
    cpu_s: CPU seconds per process (RLIMIT_CPU; SIGXCPU, then SIGKILL one second later).
    address_space_bytes: virtual memory per process (RLIMIT_AS); big allocations raise MemoryError.
    max_processes: processes/threads of the run's own uid (RLIMIT_NPROC); stops fork bombs.
    max_file_bytes: largest file the program may write (RLIMIT_FSIZE; SIGXFSZ past it).
    max_output_bytes: stdout and stderr each; past it the run is killed (status "output_limit").
    tmpfs_bytes: size of the private, RAM-backed /tmp (the program's working directory),
        so that many files of max_file_bytes cannot fill memory or disk.
    network: False gives the program a fresh network namespace with only a loopback in it.
        True shares the host's network (no evalkit task needs it).
    """

    wall_s: float = 10.0
    cpu_s: int = 10
    address_space_bytes: int = 2 * GIB
    max_processes: int = 64
    max_file_bytes: int = 16 * MIB
    max_output_bytes: int = 1 * MIB
    tmpfs_bytes: int = 64 * MIB
    network: bool = False

    def __post_init__(self) -> None:
        if self.wall_s <= 0 or self.cpu_s <= 0:
            raise ValueError("wall_s and cpu_s must be positive")
        for name in ("address_space_bytes", "max_processes", "max_file_bytes",
                     "max_output_bytes", "tmpfs_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")

    def to_dict(self) -> dict:
        """Plain dict, for recording the limits next to results."""
        return asdict(self)
