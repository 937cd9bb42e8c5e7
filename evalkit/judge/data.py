"""Readers for human-labelled preference pairs, format auto-detected.

* LLMBar / LLMBar-processed (MT-Bench): a JSON array of ``{input, output_1, output_2, label}``
  with label 1 or 2 (the human-preferred output).
* HH-RLHF: JSONL(.gz) of ``{chosen, rejected}`` full transcripts. The turns both share are the
  context (the judge's "instruction"); the final, differing assistant turn(s) are the two
  responses. Which one is shown as ``a`` is drawn per row from a hash of (seed, line), so the
  orientation is fixed for a seed, independent of ``limit``, and the human label is not always
  "a" (a judge with a position bias would otherwise look perfect or terrible).
* Generic JSONL: ``{instruction, response_a, response_b, label: "a"|"b"|"tie"}`` with optional
  ``reference`` and ``source``.

A row that does not fit its format is an :class:`EvalkitError` naming ``file:line``; rows of
HH-RLHF whose transcripts are identical (nothing to compare) are skipped and counted.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from evalkit.data.validate import sha256_file
from evalkit.errors import EvalkitError
from evalkit.judge.engine import Pair

FORMATS = ("llmbar", "hh-rlhf", "generic")


@dataclass(frozen=True)
class LabelledPair:
    id: str  # "<file name>:<line>"
    source: str
    pair: Pair
    label: str  # "a" | "b" | "tie": the human preference


@dataclass
class DataInfo:
    paths: list[str]
    formats: dict[str, str]
    sha256: dict[str, str]
    rows: int = 0
    skipped: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"paths": self.paths, "formats": self.formats, "sha256": self.sha256, "rows": self.rows,
                "skipped": self.skipped}


def read_pairs(data_path: str | list[str], *, seed: int = 0, limit: int | None = None) -> tuple[list[LabelledPair], DataInfo]:
    """Read one file, a comma-separated list or a list of files; ``limit`` keeps the first N pairs overall."""
    paths = [p.strip() for p in data_path.split(",")] if isinstance(data_path, str) else list(data_path)
    paths = [p for p in paths if p]
    if not paths:
        raise EvalkitError("data: no file given")
    info = DataInfo(paths=[os.path.abspath(p) for p in paths], formats={}, sha256={})
    items: list[LabelledPair] = []
    for path in paths:
        fmt, rows, skipped = _read_file(path, seed)
        info.formats[path] = fmt
        info.sha256[path] = sha256_file(path)
        info.skipped += skipped
        items += rows
    if limit is not None:
        items = items[: max(0, int(limit))]
    if not items:
        raise EvalkitError(f"data '{','.join(paths)}': no labelled pairs")
    info.rows = len(items)
    return items, info


def _read_file(path: str, seed: int) -> tuple[str, list[LabelledPair], int]:
    if not os.path.isfile(path):
        raise EvalkitError(f"data '{path}': no such file")
    try:
        opener = gzip.open if path.endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8") as fh:  # type: ignore[operator]
            text = fh.read()
    except (OSError, UnicodeDecodeError, EOFError) as exc:
        raise EvalkitError(f"data '{path}': cannot read ({exc})") from exc
    rows = list(_json_array(text, path) if text.lstrip().startswith("[") else _jsonl(text, path))
    if not rows:
        raise EvalkitError(f"{path}: empty file")
    fmt = _detect(rows[0][1], path, rows[0][0])
    name = os.path.basename(path)
    stem = re.sub(r"(\.jsonl?|\.gz)+$", "", name)
    out: list[LabelledPair] = []
    skipped = 0
    for line, row in rows:
        where = f"{path}:{line}"
        if not isinstance(row, dict):
            raise EvalkitError(f"{where}: expected a JSON object, got {type(row).__name__}")
        item = _ROW[fmt](row, where, seed, line)
        if item is None:
            skipped += 1
            continue
        pair, label, source = item
        out.append(LabelledPair(id=f"{name}:{line}", source=source or stem, pair=pair, label=label))
    return fmt, out, skipped


def _json_array(text: str, path: str) -> Iterator[tuple[int, Any]]:
    """Elements of a JSON array with the line each starts on (for file:line errors)."""
    dec = json.JSONDecoder()
    pos = text.index("[") + 1
    n = len(text)

    def skip(p: int) -> int:
        while p < n and text[p] in " \t\r\n":
            p += 1
        return p

    pos = skip(pos)
    if pos < n and text[pos] == "]":
        return
    while True:
        line = text.count("\n", 0, pos) + 1
        try:
            obj, pos = dec.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise EvalkitError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg})") from exc
        yield line, obj
        pos = skip(pos)
        if pos < n and text[pos] == ",":
            pos = skip(pos + 1)
            continue
        if pos < n and text[pos] == "]":
            return
        raise EvalkitError(f"{path}:{text.count(chr(10), 0, pos) + 1}: invalid JSON array (expected ',' or ']')")


def _jsonl(text: str, path: str) -> Iterator[tuple[int, Any]]:
    for i, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            yield i, json.loads(raw)
        except json.JSONDecodeError as exc:
            raise EvalkitError(f"{path}:{i}: invalid JSON ({exc.msg})") from exc


def _detect(row: Any, path: str, line: int) -> str:
    keys = set(row) if isinstance(row, dict) else set()
    if {"input", "output_1", "output_2"} <= keys:
        return "llmbar"
    if {"chosen", "rejected"} <= keys:
        return "hh-rlhf"
    if {"instruction", "response_a", "response_b"} <= keys:
        return "generic"
    raise EvalkitError(
        f"{path}:{line}: unrecognised row (expected LLMBar {{input, output_1, output_2, label}}, HH-RLHF "
        "{chosen, rejected} or {instruction, response_a, response_b, label})"
    )


def _text(row: dict[str, Any], key: str, where: str) -> str:
    value = row.get(key)
    if not isinstance(value, str):
        raise EvalkitError(f"{where}: '{key}' must be a string")
    return value


def _llmbar(row: dict[str, Any], where: str, seed: int, line: int) -> tuple[Pair, str, str | None]:
    label = row.get("label")
    if isinstance(label, bool) or label not in (1, 2):
        raise EvalkitError(f"{where}: 'label' must be 1 or 2, got {label!r}")
    pair = Pair(_text(row, "input", where), _text(row, "output_1", where), _text(row, "output_2", where))
    return pair, "a" if label == 1 else "b", None


def _generic(row: dict[str, Any], where: str, seed: int, line: int) -> tuple[Pair, str, str | None]:
    label = row.get("label")
    if not isinstance(label, str) or label.lower() not in ("a", "b", "tie"):
        raise EvalkitError(f"{where}: 'label' must be \"a\", \"b\" or \"tie\", got {label!r}")
    ref = row.get("reference")
    if ref is not None and not isinstance(ref, str):
        raise EvalkitError(f"{where}: 'reference' must be a string")
    source = row.get("source")
    pair = Pair(_text(row, "instruction", where), _text(row, "response_a", where), _text(row, "response_b", where), ref or None)
    return pair, label.lower(), str(source) if source else None


_TURN = re.compile(r"\n\n(Human|Assistant):")


def split_transcript(text: str) -> list[tuple[str, str]]:
    """``"\\n\\nHuman: ...\\n\\nAssistant: ..."`` -> [(role, text), ...]."""
    if not text.startswith("\n\n"):
        text = "\n\n" + text.lstrip("\n")
    parts = _TURN.split(text)
    head, rest = parts[0], parts[1:]
    turns = [(rest[i], rest[i + 1].strip()) for i in range(0, len(rest) - 1, 2)]
    if head.strip():
        turns.insert(0, ("Human", head.strip()))
    return turns


def render_turns(turns: list[tuple[str, str]]) -> str:
    return "\n\n".join(f"{role}: {text}" for role, text in turns)


def _hh(row: dict[str, Any], where: str, seed: int, line: int) -> tuple[Pair, str, str | None] | None:
    chosen = split_transcript(_text(row, "chosen", where))
    rejected = split_transcript(_text(row, "rejected", where))
    if not chosen or not rejected:
        raise EvalkitError(f"{where}: transcript has no 'Human:'/'Assistant:' turns")
    i = 0
    while i < min(len(chosen), len(rejected)) and chosen[i] == rejected[i]:
        i += 1
    context, c_rest, r_rest = chosen[:i], chosen[i:], rejected[i:]
    if not context or (not c_rest and not r_rest):
        return None  # identical transcripts, or no shared context: nothing to judge
    single_question = len(context) == 1 and context[0][0] == "Human"
    instruction = context[0][1] if single_question else render_turns(context)

    def response(turns: list[tuple[str, str]]) -> str:
        return turns[0][1] if len(turns) == 1 and turns[0][0] == "Assistant" else render_turns(turns)

    flip = hashlib.sha256(f"{seed}:{line}".encode()).digest()[0] & 1
    a, b = (response(r_rest), response(c_rest)) if flip else (response(c_rest), response(r_rest))
    return Pair(instruction, a, b), "b" if flip else "a", None


_ROW = {"llmbar": _llmbar, "generic": _generic, "hh-rlhf": _hh}


