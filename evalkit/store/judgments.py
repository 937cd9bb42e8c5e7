"""Judge calls and judge-agreement runs in the run store.

Why cache judgments here: a judge call is the expensive unit (a forward pass or a paid HTTP
request), and the same (judge, prompt version, instruction, candidates, order, reference)
always gets the same answer from a greedy judge, so a repeated or resumed agreement run, or a
win-rate over responses judged before, costs nothing. The key is a content hash computed by the
judge package; this module only stores rows. Tables are created lazily like the other analyses.
"""

from __future__ import annotations

import json
import time
from typing import Any

from evalkit.errors import EvalkitError
from evalkit.jsonsafe import dumps  # NaN/inf are not JSON: stored as null
from evalkit.store.analyses import new_id
from evalkit.store.sqlite import RunStore

TABLES = (
    """CREATE TABLE IF NOT EXISTS judgments (
        key TEXT PRIMARY KEY,
        judge TEXT NOT NULL,
        judge_identity TEXT NOT NULL,
        scoring TEXT NOT NULL,
        prompt_version TEXT NOT NULL,
        result_json TEXT NOT NULL,
        created_at REAL NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS judge_runs (
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,                -- agreement | winrate
        judge TEXT NOT NULL,
        judge_identity TEXT,
        data TEXT,
        created_at REAL NOT NULL,
        result_json TEXT NOT NULL
    )""",
)

def ensure_tables(store: RunStore) -> None:
    if getattr(store, "_judge_tables_ready", False):
        return
    with store.transaction() as db:
        for sql in TABLES:
            db.execute(sql)
    store._judge_tables_ready = True  # type: ignore[attr-defined]


def get_judgments(store: RunStore, keys: list[str]) -> dict[str, dict[str, Any]]:
    ensure_tables(store)
    found: dict[str, dict[str, Any]] = {}
    with store.transaction() as db:
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for row in db.execute(f"SELECT key, result_json FROM judgments WHERE key IN ({marks})", chunk):
                found[row[0]] = json.loads(row[1])
    return found


def put_judgments(
    store: RunStore, rows: list[tuple[str, dict[str, Any]]], *, judge: str, identity: str, scoring: str, prompt_version: str
) -> None:
    ensure_tables(store)
    now = time.time()
    with store.transaction() as db:
        db.executemany(
            "INSERT OR REPLACE INTO judgments(key, judge, judge_identity, scoring, prompt_version, result_json, created_at)"
            " VALUES (?,?,?,?,?,?,?)",
            [(key, judge, identity, scoring, prompt_version, dumps(result), now) for key, result in rows],
        )


def count_judgments(store: RunStore) -> int:
    ensure_tables(store)
    with store.transaction() as db:
        return int(db.execute("SELECT COUNT(*) FROM judgments").fetchone()[0])


def save_judge_run(store: RunStore, kind: str, result: dict[str, Any], *, run_id: str | None = None) -> str:
    """Store an agreement / win-rate result; returns its id (sortable by time)."""
    ensure_tables(store)
    rid = run_id or new_id()
    with store.transaction() as db:
        db.execute(
            "INSERT OR REPLACE INTO judge_runs(id, kind, judge, judge_identity, data, created_at, result_json)"
            " VALUES (?,?,?,?,?,?,?)",
            (rid, kind, str(result.get("judge", "")), result.get("judge_identity"),
             json.dumps(result.get("data")) if result.get("data") is not None else None, time.time(), dumps(result)),
        )
    return rid


def get_judge_run(store: RunStore, ref: str) -> dict[str, Any]:
    """A stored judge run's result by id, unique id prefix or ``latest``."""
    ensure_tables(store)
    with store.transaction() as db:
        if ref == "latest":
            rows = db.execute("SELECT result_json FROM judge_runs ORDER BY created_at DESC LIMIT 1").fetchall()
        else:
            rows = db.execute("SELECT result_json FROM judge_runs WHERE id=?", (ref,)).fetchall()
            if not rows:
                rows = db.execute("SELECT result_json FROM judge_runs WHERE id LIKE ?", (ref + "%",)).fetchall()
    if len(rows) != 1:
        raise EvalkitError(f"judge run '{ref}': {'ambiguous' if rows else 'not found'} in store {store.path}")
    return json.loads(rows[0][0])
