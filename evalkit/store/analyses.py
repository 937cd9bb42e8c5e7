"""Stored analyses: run comparisons and KL(policy||reference) measurements.

Why in the run store: the loop's promote/rollback gate and the reports read these results
later, next to the runs they were computed from, and one SQLite file is one thing to back up.
The tables are created lazily (``CREATE TABLE IF NOT EXISTS``) so older stores keep working;
like the rest of the store this module only stores rows (results arrive as plain dicts).
"""

from __future__ import annotations

import json
import math
import time
import uuid
from typing import Any

from evalkit.errors import EvalkitError
from evalkit.jsonsafe import dumps  # NaN/inf are not JSON: stored as null
from evalkit.store.sqlite import RunStore

TABLES = (
    """CREATE TABLE IF NOT EXISTS comparisons (
        id TEXT PRIMARY KEY,
        run_a TEXT NOT NULL,
        run_b TEXT NOT NULL,
        created_at REAL NOT NULL,
        result_json TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS kl_runs (
        id TEXT PRIMARY KEY,
        policy TEXT NOT NULL,
        ref TEXT NOT NULL,
        policy_hash TEXT,
        ref_hash TEXT,
        settings_json TEXT NOT NULL,
        mean_kl REAL,
        k1 REAL,
        k3 REAL,
        per_prompt_json TEXT NOT NULL,
        created_at REAL NOT NULL
    )""",
)


def ensure_tables(store: RunStore) -> None:
    with store.transaction() as db:
        for sql in TABLES:
            db.execute(sql)


def new_id() -> str:
    """Same shape as run ids: sortable by time, unique enough for one store."""
    return time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]


# ------------------------------------------------------------------ comparisons
def save_comparison(store: RunStore, run_a: str, run_b: str, result: dict[str, Any]) -> str:
    ensure_tables(store)
    cid = new_id()
    with store.transaction() as db:
        db.execute(
            "INSERT INTO comparisons(id, run_a, run_b, created_at, result_json) VALUES (?,?,?,?,?)",
            (cid, run_a, run_b, time.time(), dumps(result)),
        )
    return cid


def get_comparison(store: RunStore, ref: str) -> dict[str, Any]:
    """One comparison by id, unique id prefix or ``latest``: id, run_a, run_b, created_at, result."""
    row = _lookup(store, "comparisons", ref, "comparison")
    return {"id": row["id"], "run_a": row["run_a"], "run_b": row["run_b"], "created_at": row["created_at"],
            "result": json.loads(row["result_json"])}


def list_comparisons(store: RunStore, limit: int = 50) -> list[dict[str, Any]]:
    ensure_tables(store)
    with store.transaction() as db:
        rows = db.execute("SELECT id, run_a, run_b, created_at FROM comparisons ORDER BY created_at DESC LIMIT ?", (limit,)).fetchall()
    return [dict(r) for r in rows]


# ---------------------------------------------------------------------- KL runs
def save_kl(
    store: RunStore,
    *,
    policy: str,
    ref: str,
    policy_hash: str | None,
    ref_hash: str | None,
    settings: dict[str, Any],
    mean_kl: float,
    k1: float,
    k3: float,
    per_prompt: list[dict[str, Any]],
) -> str:
    ensure_tables(store)
    kid = new_id()
    with store.transaction() as db:
        db.execute(
            "INSERT INTO kl_runs(id, policy, ref, policy_hash, ref_hash, settings_json, mean_kl, k1, k3,"
            " per_prompt_json, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (kid, policy, ref, policy_hash, ref_hash, dumps(settings), _num(mean_kl), _num(k1), _num(k3),
             dumps(per_prompt), time.time()),
        )
    return kid


def get_kl(store: RunStore, ref: str) -> dict[str, Any]:
    """One KL measurement by id, unique id prefix or ``latest`` (JSON columns decoded)."""
    row = dict(_lookup(store, "kl_runs", ref, "KL run"))
    row["settings"] = json.loads(row.pop("settings_json"))
    row["per_prompt"] = json.loads(row.pop("per_prompt_json"))
    return row


def list_kl(store: RunStore, limit: int = 50) -> list[dict[str, Any]]:
    ensure_tables(store)
    with store.transaction() as db:
        rows = db.execute(
            "SELECT id, policy, ref, mean_kl, k1, k3, created_at FROM kl_runs ORDER BY created_at DESC LIMIT ?", (limit,)
        ).fetchall()
    return [dict(r) for r in rows]


# ---------------------------------------------------------------------- helpers
def _lookup(store: RunStore, table: str, ref: str, what: str) -> Any:
    ensure_tables(store)
    with store.transaction() as db:
        if ref == "latest":
            rows = db.execute(f"SELECT * FROM {table} ORDER BY created_at DESC LIMIT 1").fetchall()
        else:
            rows = db.execute(f"SELECT * FROM {table} WHERE id=?", (ref,)).fetchall()
            if not rows:
                rows = db.execute(f"SELECT * FROM {table} WHERE id LIKE ?", (ref + "%",)).fetchall()
    if len(rows) != 1:
        found = "ambiguous" if rows else "not found"
        raise EvalkitError(f"{what} '{ref}': {found} in store {store.path}")
    return rows[0]


def _num(x: float | None) -> float | None:
    """A REAL column's value: NaN as NULL. (Not :func:`evalkit.jsonsafe.finite_or_none`: SQLite
    stores ±inf, and an infinite KL stays readable as inf rather than becoming "not measured".)"""
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)
