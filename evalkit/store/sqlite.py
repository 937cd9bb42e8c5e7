"""SQLite implementation of the run store.

Why resume is safe: model responses are committed in small chunks to ``request_cache`` while
a run progresses, and an entry's samples + metrics + "complete" flag are written in one
transaction. A process killed at any instant leaves either a finished entry or a cache from
which the next attempt rebuilds the same requests without recomputing them. A run becomes
``complete`` only after every entry is.

Schema changes are additive: a column added after a store file was first written is listed in
``_ADDED_COLUMNS`` and added on open when missing (``ALTER TABLE ... ADD COLUMN``), so every
older store file keeps working. Runs got ``name`` and ``tags_json`` this way.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from evalkit.errors import EvalkitError

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    identity TEXT NOT NULL,
    status TEXT NOT NULL,              -- running | complete | failed
    model_spec TEXT NOT NULL,
    model_hash TEXT NOT NULL,
    suite_name TEXT NOT NULL,
    suite_hash TEXT NOT NULL,
    suite_json TEXT NOT NULL,
    settings_json TEXT NOT NULL,       -- limit, dtype, device, batch sizes
    versions_json TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    finished_at REAL,
    attempts INTEGER NOT NULL DEFAULT 1,
    timings_json TEXT NOT NULL DEFAULT '{}',
    error TEXT,
    name TEXT,                         -- a label for people; not part of the identity
    tags_json TEXT NOT NULL DEFAULT '{}'  -- {key: value} labels; not part of the identity
);
CREATE INDEX IF NOT EXISTS runs_identity ON runs(identity, status);
CREATE TABLE IF NOT EXISTS entries (
    run_id TEXT NOT NULL REFERENCES runs(run_id),
    entry TEXT NOT NULL,
    status TEXT NOT NULL,              -- running | complete
    config_json TEXT NOT NULL,
    started_at REAL,
    finished_at REAL,
    extra_json TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (run_id, entry)
);
CREATE TABLE IF NOT EXISTS samples (
    run_id TEXT NOT NULL,
    entry TEXT NOT NULL,
    task TEXT NOT NULL,
    doc_id INTEGER NOT NULL,
    prompt TEXT,
    target TEXT,
    responses_json TEXT,               -- list of raw responses (generation) or [] for MC
    filtered_json TEXT,                -- {filter name: filtered response}
    loglik_json TEXT,                  -- per-choice log-likelihoods for multiple choice
    metrics_json TEXT NOT NULL,        -- {metric: per-sample value}
    doc_json TEXT,                     -- the source document
    extra_json TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (run_id, task, doc_id)
);
CREATE TABLE IF NOT EXISTS metrics (
    run_id TEXT NOT NULL,
    entry TEXT NOT NULL,
    task TEXT NOT NULL,
    metric TEXT NOT NULL,
    value REAL,
    stderr REAL,
    n INTEGER,
    PRIMARY KEY (run_id, task, metric)
);
CREATE TABLE IF NOT EXISTS request_cache (
    run_id TEXT NOT NULL,
    key TEXT NOT NULL,
    result_json TEXT NOT NULL,
    PRIMARY KEY (run_id, key)
);
"""

# (table, column, declaration): columns added after the first release of the schema; a store
# file written before them gets them on open
_ADDED_COLUMNS = (
    ("runs", "name", "TEXT"),
    ("runs", "tags_json", "TEXT NOT NULL DEFAULT '{}'"),
)


def default_store_path() -> str:
    return os.environ.get("EVALKIT_STORE") or os.path.join("runs", "evalkit.sqlite")


@dataclass(frozen=True)
class RunRow:
    run_id: str
    status: str
    model_spec: str
    model_hash: str
    suite_name: str
    suite_hash: str
    created_at: float
    finished_at: float | None
    attempts: int
    settings: dict[str, Any]
    versions: dict[str, Any]
    timings: dict[str, Any]
    error: str | None
    suite: dict[str, Any]
    name: str | None = None
    tags: dict[str, str] = field(default_factory=dict)


class RunStore:
    """A handle on one store file. Cheap to open; safe to use from one process at a time per run."""

    def __init__(self, path: str | None = None, *, create: bool = True) -> None:
        """``create=False`` (reading commands): a missing file is an error, never a new empty store,
        so a mistyped ``--store`` cannot look like a store with no runs."""
        self.path = path or default_store_path()
        folder = os.path.dirname(os.path.abspath(self.path))
        if not create and not os.path.isfile(self.path):
            raise EvalkitError(f"store '{self.path}': no such file (check --store / EVALKIT_STORE; "
                               "only eval, loop and judge-agreement create a store)")
        try:
            os.makedirs(folder, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(SCHEMA)
            self._migrate()
        except (OSError, sqlite3.Error) as exc:
            raise EvalkitError(f"store '{self.path}': cannot open for writing ({exc})") from exc
        self._db.row_factory = sqlite3.Row

    def _migrate(self) -> None:
        """Add the columns of ``_ADDED_COLUMNS`` that an older store file lacks (checked again
        inside the write lock, so two processes opening the same old file do not both add them)."""
        def missing() -> list[tuple[str, str, str]]:
            have: dict[str, set[str]] = {}
            for table, column, _ in _ADDED_COLUMNS:
                if table not in have:
                    have[table] = {r[1] for r in self._db.execute(f"PRAGMA table_info({table})")}
            return [c for c in _ADDED_COLUMNS if c[1] not in have[c[0]]]

        if not missing():
            return
        self._db.execute("BEGIN IMMEDIATE")
        try:
            for table, column, decl in missing():
                self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        else:
            self._db.execute("COMMIT")

    # ------------------------------------------------------------------ runs
    def find_resumable(self, identity: str) -> str | None:
        row = self._db.execute(
            "SELECT run_id FROM runs WHERE identity=? AND status IN ('running','failed') "
            "ORDER BY created_at DESC LIMIT 1",
            (identity,),
        ).fetchone()
        return row["run_id"] if row else None

    def find_complete(self, identity: str) -> str | None:
        """The newest complete run with this identity (same weights, suite, dtype, batch, backend)."""
        row = self._db.execute(
            "SELECT run_id FROM runs WHERE identity=? AND status='complete' ORDER BY created_at DESC LIMIT 1",
            (identity,),
        ).fetchone()
        return row["run_id"] if row else None

    def create_run(
        self,
        *,
        identity: str,
        model_spec: str,
        model_hash: str,
        suite_name: str,
        suite_hash: str,
        suite: dict[str, Any],
        settings: dict[str, Any],
        versions: dict[str, Any],
        name: str | None = None,
        tags: dict[str, str] | None = None,
    ) -> str:
        """A new run in status ``running``. ``name`` and ``tags`` are labels, not identity."""
        run_id = time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]
        now = time.time()
        with self.transaction() as db:
            db.execute(
                "INSERT INTO runs(run_id, identity, status, model_spec, model_hash, suite_name, suite_hash,"
                " suite_json, settings_json, versions_json, created_at, updated_at, name, tags_json)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    run_id, identity, "running", model_spec, model_hash, suite_name, suite_hash,
                    json.dumps(suite, sort_keys=True), json.dumps(settings, sort_keys=True),
                    json.dumps(versions, sort_keys=True), now, now, name, json.dumps(dict(tags or {}), sort_keys=True),
                ),
            )
        return run_id

    def label_run(self, run_id: str, name: str | None = None, tags: dict[str, str] | None = None) -> None:
        """Attach labels to an existing run (a reused or resumed one): ``tags`` are merged into its
        tags (a given key's value replaces the old one), a given ``name`` replaces its name."""
        if name is None and not tags:
            return
        with self.transaction() as db:
            row = db.execute("SELECT name, tags_json FROM runs WHERE run_id=?", (run_id,)).fetchone()
            if row is None:
                raise EvalkitError(f"run '{run_id}': not found in store {self.path}")
            merged = {**json.loads(row["tags_json"] or "{}"), **dict(tags or {})}
            db.execute("UPDATE runs SET name=?, tags_json=? WHERE run_id=?",
                       (row["name"] if name is None else name, json.dumps(merged, sort_keys=True), run_id))

    def reopen_run(self, run_id: str) -> None:
        with self.transaction() as db:
            db.execute(
                "UPDATE runs SET status='running', error=NULL, attempts=attempts+1, updated_at=? WHERE run_id=?",
                (time.time(), run_id),
            )

    def finish_run(self, run_id: str, timings: dict[str, Any]) -> None:
        with self.transaction() as db:
            pending = db.execute(
                "SELECT COUNT(*) FROM entries WHERE run_id=? AND status!='complete'", (run_id,)
            ).fetchone()[0]
            if pending:
                raise RuntimeError(f"run {run_id}: {pending} entries are not complete")
            now = time.time()
            db.execute(
                "UPDATE runs SET status='complete', finished_at=?, updated_at=?, timings_json=? WHERE run_id=?",
                (now, now, json.dumps(timings), run_id),
            )

    def fail_run(self, run_id: str, error: str) -> None:
        with self.transaction() as db:
            db.execute(
                "UPDATE runs SET status='failed', error=?, updated_at=? WHERE run_id=? AND status!='complete'",
                (error[:2000], time.time(), run_id),
            )

    def unfinished_runs(self, model_spec: str, suite_hash: str) -> list[RunRow]:
        """Running/failed runs of this model string on this suite, newest first (identity aside)."""
        rows = self._db.execute(
            "SELECT * FROM runs WHERE model_spec=? AND suite_hash=? AND status IN ('running','failed') "
            "ORDER BY created_at DESC", (model_spec, suite_hash),
        ).fetchall()
        return [_run_row(r) for r in rows]

    def get_run(self, run_ref: str) -> RunRow:
        """A run by id, unique id prefix, or ``latest`` (the newest *complete* run: a failed or
        unfinished attempt has no results to show)."""
        if run_ref == "latest":
            row = self._db.execute(
                "SELECT * FROM runs WHERE status='complete' ORDER BY created_at DESC LIMIT 1").fetchone()
            if row is None:
                others = self._db.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
                raise EvalkitError(f"run 'latest': store {self.path} has no complete run"
                                   + (f" ({others} unfinished or failed: evalkit runs --all)" if others else ""))
        else:
            row = self._db.execute("SELECT * FROM runs WHERE run_id=?", (run_ref,)).fetchone()
            if row is None:
                rows = self._db.execute("SELECT * FROM runs WHERE run_id LIKE ?", (run_ref + "%",)).fetchall()
                row = rows[0] if len(rows) == 1 else None
        if row is None:
            raise EvalkitError(f"run '{run_ref}': not found in store {self.path}")
        return _run_row(row)

    def list_runs(self, limit: int | None = 50, include_failed: bool = True, *, model: str | None = None,
                  suite: str | None = None, name: str | None = None,
                  tags: dict[str, str] | None = None) -> list[RunRow]:
        """Runs, newest first, at most ``limit`` (``None``: all) of those that match every filter given.

        ``model``, ``suite`` and ``name`` match the run's model string, suite name and name exactly,
        or as a glob (SQLite GLOB: ``*``, ``?``, ``[...]``; case-sensitive), e.g. ``model="hub:*"``;
        ``tags``: the run has every given key with exactly the given value."""
        where, params = _run_filters(model, suite, name)
        if not include_failed:
            where.append("status!='failed'")
        sql = "SELECT * FROM runs" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY created_at DESC"
        if not tags and limit is not None:
            sql, params = sql + " LIMIT ?", [*params, limit]
        runs = [_run_row(r) for r in self._db.execute(sql, params)]
        if tags:
            runs = [r for r in runs if _tags_match(r.tags, tags)]
        return runs if limit is None else runs[:limit]

    def count_runs(self, status: str, *, model: str | None = None, suite: str | None = None,
                   name: str | None = None, tags: dict[str, str] | None = None) -> int:
        """How many runs have this status (and match the filters of :meth:`list_runs`)."""
        where, params = _run_filters(model, suite, name)
        sql = "SELECT tags_json FROM runs WHERE " + " AND ".join(["status=?", *where])
        rows = self._db.execute(sql, [status, *params]).fetchall()
        return sum(1 for r in rows if not tags or _tags_match(json.loads(r["tags_json"] or "{}"), tags))

    # --------------------------------------------------------------- entries
    def entry_status(self, run_id: str, entry: str) -> str | None:
        row = self._db.execute("SELECT status FROM entries WHERE run_id=? AND entry=?", (run_id, entry)).fetchone()
        return row["status"] if row else None

    def start_entry(self, run_id: str, entry: str, config: dict[str, Any]) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT INTO entries(run_id, entry, status, config_json, started_at) VALUES (?,?,?,?,?) "
                "ON CONFLICT(run_id, entry) DO UPDATE SET started_at=excluded.started_at",
                (run_id, entry, "running", json.dumps(config, sort_keys=True, default=str), time.time()),
            )

    def complete_entry(
        self,
        run_id: str,
        entry: str,
        samples: Iterable[dict[str, Any]],
        metrics: Iterable[dict[str, Any]],
        extra: dict[str, Any] | None = None,
    ) -> None:
        """Write an entry's samples and metrics and mark it complete, atomically."""
        with self.transaction() as db:
            db.execute("DELETE FROM samples WHERE run_id=? AND entry=?", (run_id, entry))
            db.execute("DELETE FROM metrics WHERE run_id=? AND entry=?", (run_id, entry))
            db.executemany(
                "INSERT INTO samples(run_id, entry, task, doc_id, prompt, target, responses_json, filtered_json,"
                " loglik_json, metrics_json, doc_json, extra_json) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                [
                    (
                        run_id, entry, s["task"], int(s["doc_id"]), s.get("prompt"), _text(s.get("target")),
                        _dump(s.get("responses")), _dump(s.get("filtered")), _dump(s.get("loglikelihoods")),
                        _dump(s.get("metrics") or {}), _dump(s.get("doc")), _dump(s.get("extra") or {}),
                    )
                    for s in samples
                ],
            )
            db.executemany(
                "INSERT INTO metrics(run_id, entry, task, metric, value, stderr, n) VALUES (?,?,?,?,?,?,?)",
                [
                    (run_id, entry, m["task"], m["metric"], m.get("value"), m.get("stderr"), m.get("n"))
                    for m in metrics
                ],
            )
            db.execute(
                "UPDATE entries SET status='complete', finished_at=?, extra_json=? WHERE run_id=? AND entry=?",
                (time.time(), json.dumps(extra or {}, default=str), run_id, entry),
            )
            db.execute("DELETE FROM request_cache WHERE run_id=? AND key LIKE ?", (run_id, entry + "|%"))

    # ---------------------------------------------------------- request cache
    def cache_get(self, run_id: str, keys: list[str]) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for row in self._db.execute(
                f"SELECT key, result_json FROM request_cache WHERE run_id=? AND key IN ({marks})", (run_id, *chunk)
            ):
                found[row["key"]] = json.loads(row["result_json"])
        return found

    def cache_put(self, run_id: str, items: dict[str, Any]) -> None:
        with self.transaction() as db:
            db.executemany(
                "INSERT OR REPLACE INTO request_cache(run_id, key, result_json) VALUES (?,?,?)",
                [(run_id, k, json.dumps(v)) for k, v in items.items()],
            )

    # --------------------------------------------------------------- queries
    def metrics(self, run_id: str) -> list[dict[str, Any]]:
        rows = self._db.execute(
            "SELECT entry, task, metric, value, stderr, n FROM metrics WHERE run_id=? ORDER BY entry, task, metric",
            (run_id,),
        ).fetchall()
        return [dict(r) for r in rows]

    def samples(self, run_id: str, entry: str | None = None) -> list[dict[str, Any]]:
        sql = "SELECT * FROM samples WHERE run_id=?" + (" AND entry=?" if entry else "") + " ORDER BY entry, task, doc_id"
        rows = self._db.execute(sql, (run_id, entry) if entry else (run_id,)).fetchall()
        out = []
        for r in rows:
            d = dict(r)
            for col in ("responses_json", "filtered_json", "loglik_json", "metrics_json", "doc_json", "extra_json"):
                d[col[: -len("_json")]] = json.loads(d.pop(col)) if d[col] is not None else None
            out.append(d)
        return out

    def entries(self, run_id: str) -> list[dict[str, Any]]:
        rows = self._db.execute("SELECT * FROM entries WHERE run_id=? ORDER BY started_at", (run_id,)).fetchall()
        return [dict(r) for r in rows]

    def cached_count(self, run_id: str) -> int:
        return self._db.execute("SELECT COUNT(*) FROM request_cache WHERE run_id=?", (run_id,)).fetchone()[0]


def _dump(value: Any) -> str | None:
    return None if value is None else json.dumps(value, default=str)


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, default=str)


def _run_filters(model: str | None, suite: str | None, name: str | None) -> tuple[list[str], list[Any]]:
    """SQL conditions for list_runs' exact-or-glob filters (SQLite's GLOB is fnmatch's syntax, case-sensitive)."""
    where: list[str] = []
    params: list[Any] = []
    for column, value in (("model_spec", model), ("suite_name", suite), ("name", name)):
        if value is not None:
            where.append(f"({column}=? OR {column} GLOB ?)")
            params += [value, value]
    return where, params


def _tags_match(have: dict[str, Any], want: dict[str, str]) -> bool:
    return all(k in have and str(have[k]) == str(v) for k, v in want.items())


def _run_row(row: sqlite3.Row) -> RunRow:
    return RunRow(
        run_id=row["run_id"], status=row["status"], model_spec=row["model_spec"], model_hash=row["model_hash"],
        suite_name=row["suite_name"], suite_hash=row["suite_hash"], created_at=row["created_at"],
        finished_at=row["finished_at"], attempts=row["attempts"], settings=json.loads(row["settings_json"]),
        versions=json.loads(row["versions_json"]), timings=json.loads(row["timings_json"]), error=row["error"],
        suite=json.loads(row["suite_json"]), name=row["name"], tags=json.loads(row["tags_json"] or "{}"),
    )
