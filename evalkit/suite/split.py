"""Selection / confirmation split of a suite entry, fixed at freeze time.

Why: the loop picks its training data from the failures it sees; measuring the gain on those
same items rewards regression to the mean (items chosen *because* they failed partly "recover"
under any perturbation). So a targeted entry (``confirm_fraction:`` in the suite) is split once,
before any training, by a stable hash of each item's content: the *selection* half feeds the
clusters and the data; the *confirmation* half is the only place the gate measures the target.

The split is a pure function of (item content, salt, fraction): the same file always splits the
same way, on any machine, whatever the row order, and it is recorded (doc ids of each half) in
the frozen suite, so its hash changes if the split would.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from evalkit.errors import EvalkitError

SALT = "evalkit-split-v1"
PARTS = ("all", "select", "confirm")


def item_unit(row: dict[str, Any], salt: str = SALT) -> float:
    """A number in [0, 1) from the item's canonical JSON: where the item falls in the split."""
    blob = salt + json.dumps(row, sort_keys=True, ensure_ascii=False)
    return int(hashlib.sha256(blob.encode()).hexdigest()[:15], 16) / 16**15


def split_ids(rows: Sequence[dict[str, Any]], fraction: float, salt: str = SALT) -> dict[str, list[int]]:
    """Doc ids (row positions) of each half: ``confirm`` when the item's unit < ``fraction``."""
    if not 0.0 < fraction < 1.0:
        raise EvalkitError(f"confirm_fraction must be between 0 and 1 (got {fraction})")
    confirm = [i for i, r in enumerate(rows) if item_unit(r, salt) < fraction]
    confirm_set = set(confirm)
    return {"confirm": confirm, "select": [i for i in range(len(rows)) if i not in confirm_set]}


def eval_rows(config: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows an lm-eval task config evaluates, read from its local JSON/JSONL test split.

    Only local files can be split at freeze time (no download before freezing), so a hub-backed
    entry with ``confirm_fraction`` is refused with one line."""
    split = config.get("test_split") or config.get("validation_split")
    files = ((config.get("dataset_kwargs") or {}).get("data_files") or {})
    path = files.get(split) if isinstance(files, dict) else None
    if config.get("dataset_path") != "json" or not isinstance(path, str):
        raise EvalkitError(f"task '{config.get('task')}': confirm_fraction needs the task's data in a local mirror "
                           "(pass --data-dir) so the split can be fixed before anything runs")
    rows: list[dict[str, Any]] = []
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    if path.endswith(".json") and text.lstrip().startswith("["):
        rows = json.loads(text)
    else:
        rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    return rows


def check_sizes(name: str, parts: dict[str, list[int]], minimum: int = 20) -> None:
    """A split that leaves too few items on either side cannot select or confirm anything."""
    for part, ids in parts.items():
        if len(ids) < minimum:
            raise EvalkitError(f"entry '{name}': the {part} half has {len(ids)} items (< {minimum}); "
                               "raise the entry's limit or change confirm_fraction")
