"""An OpenAI-compatible endpoint as a judge (``openai:<base_url>#<model>``).

Why the stdlib: one POST to the documented ``/v1/chat/completions`` API needs no SDK, and
``urllib`` keeps the judge usable where the ``openai`` package is not installed. Servers differ
in whether they return log-probabilities, so the verdict is read from the generated text
(greedy, a few tokens) with :func:`~evalkit.judge.verdict.parse_verdict_text`; replies that do
not parse are recorded as parse failures, never guessed. Requests run on a small thread pool;
429/5xx and connection errors are retried with backoff, then raise :class:`EvalkitError`.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from evalkit.errors import EvalkitError
from evalkit.judge.prompt import JudgeRequest, build_messages
from evalkit.judge.verdict import SingleJudgment, parse_verdict_text
from evalkit.models.spec import ModelSpec

SCORING = "text-v1"


class OpenAIJudge:
    def __init__(
        self,
        spec: ModelSpec,
        *,
        timeout_s: float = 120.0,
        concurrency: int = 4,
        max_tokens: int = 8,
        retries: int = 3,
        api_key: str | None = None,
    ) -> None:
        assert spec.kind == "openai" and spec.base_url and spec.model_name
        self.spec = spec
        self.name = spec.raw
        self.url = spec.base_url.rstrip("/") + "/chat/completions"
        self.model = spec.model_name
        self.timeout_s = timeout_s
        self.concurrency = max(1, concurrency)
        self.max_tokens = max_tokens
        self.retries = retries
        self.api_key = api_key or os.environ.get("EVALKIT_API_KEY") or os.environ.get("OPENAI_API_KEY") or "EMPTY"
        self.scoring = f"{SCORING}:t0:max{max_tokens}"
        self.identity = f"endpoint:{spec.base_url}#{spec.model_name}"
        self.calls = 0  # HTTP requests that returned a reply

    def judge(self, requests: Sequence[JudgeRequest]) -> list[SingleJudgment]:
        if not requests:
            return []
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(requests))) as pool:
            return list(pool.map(self._one, requests))

    def _one(self, req: JudgeRequest) -> SingleJudgment:
        body = {"model": self.model, "messages": build_messages(req), "temperature": 0.0,
                "max_tokens": self.max_tokens, "n": 1}
        reply = self._post(body)
        try:
            text = reply["choices"][0]["message"]["content"] or ""
        except (KeyError, IndexError, TypeError) as exc:
            raise EvalkitError(f"judge '{self.name}': unexpected reply from {self.url}: {str(reply)[:200]}") from exc
        self.calls += 1
        return SingleJudgment(verdict=parse_verdict_text(text, req.allow_tie), text=text[:500])

    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        data = json.dumps(body).encode()
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {self.api_key}"}
        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(min(8.0, 0.5 * 2 ** (attempt - 1)))
            request = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as resp:
                    return json.loads(resp.read().decode("utf-8"))
            except urllib.error.HTTPError as exc:
                detail = exc.read().decode("utf-8", "replace")[:200]
                last = f"HTTP {exc.code}: {detail}"
                if exc.code not in (408, 409, 429) and exc.code < 500:
                    break
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
                last = str(getattr(exc, "reason", exc))
            except json.JSONDecodeError as exc:
                last = f"reply is not JSON ({exc})"
                break
        raise EvalkitError(f"judge '{self.name}': request to {self.url} failed ({last})")
