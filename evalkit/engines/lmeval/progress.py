"""Progress of an lm-eval entry: one labelled bar, nothing else.

Why: lm-eval draws an unlabelled bar per task while it builds requests (57 for MMLU), each
jumping from 0 to 100% in a blink, and the model wrapper drew one more per request type. A user
wants one line per entry that says what runs, how much is done, how fast and how long is left,
and that moves only when work is safe in the store. :class:`EntryProgress` is that bar (its total
grows as the entry's request types arrive; :class:`PersistentLM` advances it per committed
chunk); :func:`quiet_request_building` silences lm-eval's request-building bars for the call.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from typing import Any

from tqdm.auto import tqdm

BAR_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} req [{elapsed}<{remaining}, {rate_fmt}]"


class EntryProgress:
    """One bar for one entry, drawn when its first requests arrive (not at 0/0 before them).

    ``add`` grows the total as lm-eval hands over each request type and counts answers already
    in the store as done without letting them into the rate or ETA; ``advance`` moves the bar
    by committed answers only.
    """

    def __init__(self, entry: str, enabled: bool = True) -> None:
        self.entry = entry
        self.enabled = enabled
        self._bar: Any = None

    def add(self, total: int, done: int = 0) -> None:
        if not self.enabled:
            return
        if self._bar is None:
            self._bar = tqdm(total=total, initial=done, desc=self.entry, unit="req", dynamic_ncols=True,
                             bar_format=BAR_FORMAT, smoothing=0.1)
            return
        self._bar.total += total
        self._bar.n += done
        self._bar.initial += done
        self._bar.refresh()

    def advance(self, n: int) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


@contextlib.contextmanager
def quiet_request_building() -> Iterator[None]:
    """Turn off lm-eval's per-task "building requests" bars (``lm_eval.api.task.tqdm``) meanwhile."""
    import lm_eval.api.task as task_mod

    original = task_mod.tqdm
    task_mod.tqdm = functools.partial(original, disable=True)
    try:
        yield
    finally:
        task_mod.tqdm = original
