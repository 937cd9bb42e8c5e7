"""Stored failure clusterings: one ``clusterings`` row per clustering of a run, its
``clusters`` (label, size, error rate, lift, mixes, central failing examples) and
``cluster_members`` (which sample is in which cluster, its map position and centrality).

Why in the run store: the training loop turns clusters into counterexample data and reads them
by run id (``SELECT ... FROM cluster_members WHERE run_id=? AND cluster_id=?`` works directly).
Tables are created lazily so older stores keep working; this module only stores plain rows.
"""

from __future__ import annotations

import json
import time
from typing import Any

from evalkit.jsonsafe import dumps, finite_or_none
from evalkit.store.analyses import new_id
from evalkit.store.sqlite import RunStore

TABLES = (
    """CREATE TABLE IF NOT EXISTS clusterings (
        id TEXT PRIMARY KEY,
        run_id TEXT NOT NULL,
        created_at REAL NOT NULL,
        seed INTEGER NOT NULL,
        method TEXT NOT NULL,              -- hdbscan | kmeans | single | by-entry ('+'-joined)
        tasks_json TEXT NOT NULL,          -- the --tasks filter (null = all)
        params_json TEXT NOT NULL,
        stability REAL,                    -- mean pairwise adjusted Rand index across seeds
        stability_json TEXT NOT NULL,
        n_samples INTEGER NOT NULL,
        n_failures INTEGER NOT NULL,
        timings_json TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS clusterings_run ON clusterings(run_id, created_at)",
    """CREATE TABLE IF NOT EXISTS clusters (
        clustering_id TEXT NOT NULL,
        cluster_id INTEGER NOT NULL,       -- < 0: one entry's HDBSCAN outliers
        label TEXT NOT NULL,
        terms_json TEXT NOT NULL,
        size INTEGER NOT NULL,
        failures INTEGER NOT NULL,
        error_rate REAL NOT NULL,
        base_rate REAL NOT NULL,
        lift REAL,
        task_mix_json TEXT NOT NULL,
        tag_mix_json TEXT NOT NULL,
        examples_json TEXT NOT NULL,
        PRIMARY KEY (clustering_id, cluster_id)
    )""",
    """CREATE TABLE IF NOT EXISTS cluster_members (
        clustering_id TEXT NOT NULL,
        run_id TEXT NOT NULL,
        entry TEXT NOT NULL,
        task TEXT NOT NULL,
        doc_id INTEGER NOT NULL,
        cluster_id INTEGER NOT NULL,
        failed INTEGER NOT NULL,
        x REAL NOT NULL,
        y REAL NOT NULL,
        distance REAL NOT NULL,            -- to the cluster centroid in the clustering space
        PRIMARY KEY (clustering_id, task, doc_id)
    )""",
    "CREATE INDEX IF NOT EXISTS cluster_members_run ON cluster_members(run_id, cluster_id)",
)

CLUSTER_JSON = ("terms", "task_mix", "tag_mix", "examples")
# Columns added after the first release (nullable; rows stored before them read back without them):
# clusters.stats_json = per-slice error_ci / lift_ci / beats_metadata / typical;
# clusterings.extra_json = the metadata-baseline comparison.
ADDED = (("clusters", "stats_json"), ("clusterings", "extra_json"))
STATS = ("error_ci", "lift_ci", "beats_metadata", "typical")


def ensure_tables(store: RunStore) -> None:
    with store.transaction() as db:
        for sql in TABLES:
            db.execute(sql)
        for table, col in ADDED:
            have = {r[1] for r in db.execute(f"PRAGMA table_info({table})").fetchall()}
            if col not in have:
                db.execute(f"ALTER TABLE {table} ADD COLUMN {col} TEXT")


def save_clustering(store: RunStore, header: dict[str, Any], clusters: list[dict[str, Any]],
                    members: list[dict[str, Any]]) -> str:
    """Write one clustering atomically; returns its id."""
    ensure_tables(store)
    cid = new_id()
    with store.transaction() as db:
        db.execute(
            "INSERT INTO clusterings(id, run_id, created_at, seed, method, tasks_json, params_json, stability,"
            " stability_json, n_samples, n_failures, timings_json, extra_json) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (cid, header["run_id"], time.time(), int(header["seed"]), header["method"], dumps(header.get("tasks")),
             dumps(header.get("params") or {}), header.get("stability"), dumps(header.get("stability_pairs") or []),
             int(header["n_samples"]), int(header["n_failures"]), dumps(header.get("timings") or {}),
             dumps(header.get("extra") or {})),
        )
        db.executemany(
            "INSERT INTO clusters(clustering_id, cluster_id, label, terms_json, size, failures, error_rate, base_rate,"
            " lift, task_mix_json, tag_mix_json, examples_json, stats_json) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            [(cid, int(c["cluster_id"]), c["label"], dumps(c["terms"]), int(c["size"]), int(c["failures"]),
              float(c["error_rate"]), float(c["base_rate"]), finite_or_none(c.get("lift")), dumps(c["task_mix"]),
              dumps(c["tag_mix"]), dumps(c["examples"]), dumps({k: c.get(k) for k in STATS})) for c in clusters],
        )
        db.executemany(
            "INSERT INTO cluster_members(clustering_id, run_id, entry, task, doc_id, cluster_id, failed, x, y, distance)"
            " VALUES (?,?,?,?,?,?,?,?,?,?)",
            [(cid, header["run_id"], m["entry"], m["task"], int(m["doc_id"]), int(m["cluster_id"]), int(bool(m["failed"])),
              float(m["x"]), float(m["y"]), float(m["distance"])) for m in members],
        )
    return cid


def load_clustering(store: RunStore, run_id: str | None = None, clustering_id: str | None = None
                    ) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]] | None:
    """(header, clusters, members) of the given clustering, or of the run's latest; None if none."""
    ensure_tables(store)
    with store.transaction() as db:
        if clustering_id is not None:
            head = db.execute("SELECT * FROM clusterings WHERE id=?", (clustering_id,)).fetchone()
        else:
            head = db.execute("SELECT * FROM clusterings WHERE run_id=? ORDER BY created_at DESC, rowid DESC LIMIT 1",
                              (run_id,)).fetchone()
        if head is None:
            return None
        cl = db.execute("SELECT * FROM clusters WHERE clustering_id=? ORDER BY cluster_id < 0, ABS(cluster_id)",
                        (head["id"],)).fetchall()
        mem = db.execute("SELECT entry, task, doc_id, cluster_id, failed, x, y, distance FROM cluster_members"
                         " WHERE clustering_id=? ORDER BY entry, task, doc_id", (head["id"],)).fetchall()
    header = dict(head)
    for col in ("tasks", "params", "timings"):
        header[col] = json.loads(header.pop(col + "_json"))
    header["stability_pairs"] = json.loads(header.pop("stability_json"))
    header["clustering_id"] = header.pop("id")
    header["extra"] = json.loads(header.pop("extra_json", None) or "{}")
    clusters = []
    for row in cl:
        d = dict(row)
        for col in CLUSTER_JSON:
            d[col] = json.loads(d.pop(col + "_json"))
        d.update(json.loads(d.pop("stats_json", None) or "{}"))
        clusters.append(d)
    members = [{**dict(r), "failed": bool(r["failed"])} for r in mem]
    return header, clusters, members


def list_clusterings(store: RunStore, run_id: str) -> list[dict[str, Any]]:
    ensure_tables(store)
    with store.transaction() as db:
        rows = db.execute("SELECT id, run_id, created_at, seed, method, stability, n_samples, n_failures"
                          " FROM clusterings WHERE run_id=? ORDER BY created_at DESC", (run_id,)).fetchall()
    return [dict(r) for r in rows]
