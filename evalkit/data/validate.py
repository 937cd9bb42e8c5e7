"""Row-level validation of JSONL and CSV files, with file:line in every error."""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import os
from collections.abc import Iterator
from typing import Any

from evalkit.errors import EvalkitError


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def require_file(path: str, what: str) -> str:
    if not os.path.isfile(path):
        raise EvalkitError(f"data: missing {what} file {path}")
    return path


def iter_jsonl(path: str, required: tuple[str, ...] = ()) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, row) for each non-blank line; any bad row raises with file:line."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise EvalkitError(f"data {path}:{lineno}: not valid JSON ({exc.msg})") from exc
                if not isinstance(row, dict):
                    raise EvalkitError(f"data {path}:{lineno}: expected a JSON object per line")
                missing = [k for k in required if k not in row]
                if missing:
                    raise EvalkitError(f"data {path}:{lineno}: missing field(s) {', '.join(missing)}")
                yield lineno, row
    except OSError as exc:
        raise EvalkitError(f"data {path}: cannot read ({exc})") from exc
    except UnicodeDecodeError as exc:
        raise EvalkitError(f"data {path}: not UTF-8 text ({exc.reason})") from exc


def read_jsonl(path: str, required: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    return [row for _, row in iter_jsonl(path, required)]


def read_csv_rows(path: str, header: tuple[str, ...]) -> list[dict[str, str]]:
    """Read a CSV whose header must be exactly ``header``; values stay strings, verbatim."""
    try:
        with open(path, encoding="utf-8", newline="") as fh:
            reader = csv.reader(fh)
            first = next(reader, None)
            if first is None or tuple(first) != header:
                raise EvalkitError(f"data {path}:1: expected header {','.join(header)}")
            rows = []
            for row in reader:
                if not row:
                    continue
                if len(row) != len(header):
                    raise EvalkitError(f"data {path}:{reader.line_num}: expected {len(header)} columns, got {len(row)}")
                rows.append(dict(zip(header, row)))
            return rows
    except OSError as exc:
        raise EvalkitError(f"data {path}: cannot read ({exc})") from exc
    except (UnicodeDecodeError, csv.Error) as exc:
        raise EvalkitError(f"data {path}: unreadable CSV ({exc})") from exc
