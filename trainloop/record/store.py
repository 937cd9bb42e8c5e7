"""The loop's rows in the run store: loops, their steps, and the training data each round chose.

Why steps are rows: ``make loop`` must survive ``kill -9`` at any point and resume from the last
*finished* step. A step is marked ``done`` in the same transaction that stores its result, so a
step killed half-way is still ``running`` and is simply run again (steps write their outputs
under fresh names or overwrite them, so re-running is safe). Later steps read earlier results
from here, never from memory, which is what makes resuming exact.
"""

from __future__ import annotations

import json
import time
from typing import Any

from evalkit.jsonsafe import dumps
from evalkit.store.sqlite import RunStore

TABLES = (
    """CREATE TABLE IF NOT EXISTS loops (
        id TEXT PRIMARY KEY,               -- hash of the arguments that define the loop (not ROUNDS)
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        config_json TEXT NOT NULL,
        suite_hash TEXT,                   -- recorded by round 0; any later change stops the loop
        status TEXT NOT NULL               -- running | done | failed | stopped
    )""",
    """CREATE TABLE IF NOT EXISTS loop_steps (
        loop_id TEXT NOT NULL,
        round INTEGER NOT NULL,
        step TEXT NOT NULL,
        status TEXT NOT NULL,              -- running | done | failed
        started_at REAL NOT NULL,
        finished_at REAL,
        attempts INTEGER NOT NULL DEFAULT 1,
        result_json TEXT,
        error TEXT,
        PRIMARY KEY (loop_id, round, step)
    )""",
    """CREATE TABLE IF NOT EXISTS loop_examples (
        loop_id TEXT NOT NULL,
        round INTEGER NOT NULL,
        idx INTEGER NOT NULL,
        kind TEXT NOT NULL,                -- sft | dpo | grpo (a prompt with its verifier)
        data_json TEXT NOT NULL,           -- what the trainer sees
        provenance_json TEXT NOT NULL,     -- strategy, cluster, source row / eval item, verifier result
        PRIMARY KEY (loop_id, round, idx)
    )""",
)


def ensure_tables(store: RunStore) -> None:
    with store.transaction() as db:
        for sql in TABLES:
            db.execute(sql)


def open_loop(store: RunStore, loop_id: str, config: dict[str, Any]) -> bool:
    """Create the loop row unless it exists; True when it already existed (a resume)."""
    ensure_tables(store)
    now = time.time()
    with store.transaction() as db:
        row = db.execute("SELECT id FROM loops WHERE id=?", (loop_id,)).fetchone()
        if row:
            db.execute("UPDATE loops SET updated_at=?, status='running' WHERE id=?", (now, loop_id))
            return True
        db.execute("INSERT INTO loops(id, created_at, updated_at, config_json, status) VALUES (?,?,?,?,?)",
                   (loop_id, now, now, dumps(config), "running"))
    return False


def get_loop(store: RunStore, loop_id: str) -> dict[str, Any] | None:
    ensure_tables(store)
    row = store._db.execute("SELECT * FROM loops WHERE id=?", (loop_id,)).fetchone()
    if row is None:
        return None
    d = dict(row)
    d["config"] = json.loads(d.pop("config_json"))
    return d


def set_loop(store: RunStore, loop_id: str, **fields: Any) -> None:
    allowed = {"suite_hash", "status"}
    bad = set(fields) - allowed
    if bad:
        raise ValueError(f"unknown loop fields {sorted(bad)}")
    with store.transaction() as db:
        for k, v in fields.items():
            db.execute(f"UPDATE loops SET {k}=?, updated_at=? WHERE id=?", (v, time.time(), loop_id))


def step_result(store: RunStore, loop_id: str, rnd: int, step: str) -> dict[str, Any] | None:
    """The stored result of a finished step, else None."""
    row = store._db.execute("SELECT status, result_json FROM loop_steps WHERE loop_id=? AND round=? AND step=?",
                            (loop_id, rnd, step)).fetchone()
    if row is None or row["status"] != "done":
        return None
    return json.loads(row["result_json"]) if row["result_json"] else {}


def start_step(store: RunStore, loop_id: str, rnd: int, step: str) -> None:
    with store.transaction() as db:
        db.execute(
            "INSERT INTO loop_steps(loop_id, round, step, status, started_at) VALUES (?,?,?,'running',?) "
            "ON CONFLICT(loop_id, round, step) DO UPDATE SET status='running', started_at=excluded.started_at, "
            "attempts=attempts+1, error=NULL",
            (loop_id, rnd, step, time.time()))


def finish_step(store: RunStore, loop_id: str, rnd: int, step: str, result: dict[str, Any]) -> None:
    with store.transaction() as db:
        db.execute("UPDATE loop_steps SET status='done', finished_at=?, result_json=? WHERE loop_id=? AND round=? AND step=?",
                   (time.time(), dumps(result), loop_id, rnd, step))


def fail_step(store: RunStore, loop_id: str, rnd: int, step: str, error: str) -> None:
    with store.transaction() as db:
        db.execute("UPDATE loop_steps SET status='failed', finished_at=?, error=? WHERE loop_id=? AND round=? AND step=?",
                   (time.time(), error, loop_id, rnd, step))


def steps(store: RunStore, loop_id: str) -> list[dict[str, Any]]:
    ensure_tables(store)
    rows = store._db.execute("SELECT * FROM loop_steps WHERE loop_id=? ORDER BY round, started_at", (loop_id,)).fetchall()
    out = []
    for r in rows:
        d = dict(r)
        d["result"] = json.loads(d.pop("result_json")) if d.get("result_json") else None
        out.append(d)
    return out


def put_examples(store: RunStore, loop_id: str, rnd: int, examples: list[tuple[str, dict[str, Any], dict[str, Any]]]) -> None:
    """Replace a round's training data: (kind, data, provenance) rows (replacing makes a re-run step exact)."""
    with store.transaction() as db:
        db.execute("DELETE FROM loop_examples WHERE loop_id=? AND round=?", (loop_id, rnd))
        db.executemany("INSERT INTO loop_examples(loop_id, round, idx, kind, data_json, provenance_json) VALUES (?,?,?,?,?,?)",
                       [(loop_id, rnd, i, kind, dumps(data), dumps(prov)) for i, (kind, data, prov) in enumerate(examples)])


def get_examples(store: RunStore, loop_id: str, rnd: int) -> list[dict[str, Any]]:
    rows = store._db.execute("SELECT kind, data_json, provenance_json FROM loop_examples WHERE loop_id=? AND round=? "
                             "ORDER BY idx", (loop_id, rnd)).fetchall()
    return [{"kind": r["kind"], "data": json.loads(r["data_json"]), "provenance": json.loads(r["provenance_json"])}
            for r in rows]

