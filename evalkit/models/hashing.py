"""Content hashes of weight files, cached by (path, size, mtime).

A run records *which weights* it measured, not just the name the user typed: two runs of
``./ckpt`` before and after a training step must not look like the same model. Hashing
540 MB takes ~1 s, so results are memoised in a small JSON file in the evalkit cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading

from evalkit.env import cache_dir

_LOCK = threading.Lock()
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".json", ".model")


def file_sha256(path: str) -> str:
    st = os.stat(path)
    key = f"{os.path.abspath(path)}|{st.st_size}|{st.st_mtime_ns}"
    memo_path = os.path.join(cache_dir(), "hash-memo.json")
    with _LOCK:
        memo = _read_memo(memo_path)
        if key in memo:
            return memo[key]
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    value = digest.hexdigest()
    with _LOCK:
        memo = _read_memo(memo_path)
        memo[key] = value
        tmp = memo_path + f".{os.getpid()}.tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(memo, fh)
        os.replace(tmp, memo_path)
    return value


def folder_sha256(folder: str) -> str:
    """Hash of every weight/config file in a model folder (names and contents)."""
    digest = hashlib.sha256()
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if os.path.isfile(path) and name.endswith(WEIGHT_SUFFIXES):
            digest.update(name.encode())
            digest.update(file_sha256(path).encode())
    return digest.hexdigest()


def _read_memo(path: str) -> dict[str, str]:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, json.JSONDecodeError):
        return {}
