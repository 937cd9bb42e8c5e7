"""The run store: every run, entry, sample, metric and cached model response.

SQLite by default (one file, WAL mode, safe against kill -9 between transactions). The store
knows nothing of engines, analyses or reports: it stores rows and answers queries.
"""

from evalkit.store.sqlite import RunStore, default_store_path

__all__ = ["RunStore", "default_store_path"]
