"""Process-wide runtime settings that must be applied before torch is imported.

Why this exists: on the 2-core VMs this project runs on, torch's OpenMP threads busy-wait
and run 2-50x slower unless ``OMP_WAIT_POLICY=PASSIVE`` is set *before* torch loads; and the
``datasets`` json loader / inspect's hf provider contact the hub (and wait on time-outs) unless
the offline variables are set. The CLI calls :func:`configure_threads` at start-up and
:func:`set_offline` whenever the data it will read is local.
"""

from __future__ import annotations

import os
import sys

OFFLINE_VARS = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_UPDATE_DOWNLOAD_COUNTS": "false",
}


def configure_threads() -> None:
    """Avoid the OpenMP busy-wait trap; respect values the user already set."""
    if "torch" in sys.modules:  # too late to change OpenMP's behaviour; nothing to do
        return
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TQDM_MININTERVAL", "1")


def set_offline() -> None:
    """Tell every HF library not to touch the network (local data and models only)."""
    for key, value in OFFLINE_VARS.items():
        os.environ[key] = value
    # huggingface_hub / datasets read these at import time; patch the live constants too.
    try:
        import huggingface_hub.constants as hub_constants

        hub_constants.HF_HUB_OFFLINE = True
    except Exception:  # pragma: no cover - hub not importable is fine
        pass
    try:
        import datasets.config as ds_config

        ds_config.HF_HUB_OFFLINE = True
        ds_config.HF_DATASETS_OFFLINE = True
    except Exception:  # pragma: no cover
        pass


def is_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false", "False")


def cache_dir() -> str:
    """Where evalkit keeps converted models and other derived artefacts."""
    base = os.environ.get("EVALKIT_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "evalkit"
    )
    os.makedirs(base, exist_ok=True)
    return base


REPORTS_ENV = "EVALKIT_REPORTS"
REPORTS_HELP = (f"folder for HTML reports (default: ${REPORTS_ENV} when set, else ./reports under the current "
                "directory; always made absolute, and each command prints the absolute path it wrote)")


def reports_dir_default() -> str:
    """The one rule for where reports go: ``$EVALKIT_REPORTS`` when set, else ``./reports``
    relative to the current directory, returned as an absolute path (so every command can print
    exactly where its pages landed; nothing is silently relative)."""
    return os.path.abspath(os.path.expanduser(os.environ.get(REPORTS_ENV) or "reports"))


def absolute_reports_dir(path: str) -> str:
    """``--reports-dir`` values are made absolute (``~`` expanded) at parse time."""
    return os.path.abspath(os.path.expanduser(path))
