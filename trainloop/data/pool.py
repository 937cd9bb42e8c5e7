"""Training pools: any JSONL of chat or prompt/answer examples, read into one shape.

Why accept several schemas: users bring what they have — TRL's conversational ``messages`` and
``prompt``/``completion`` forms, GSM8K's ``question``/``answer``, Alpaca's
``instruction``/``input``/``output``. Every row becomes a :class:`PoolExample` with the prompt the
model sees, the reference response and its line number (the provenance the loop stores).

A malformed row is an error naming ``file:line``, never a silent skip: a skipped row would shift
the pool the loop selects from without anyone noticing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from evalkit.errors import EvalkitError

PAIRS = (("prompt", "completion"), ("prompt", "response"), ("question", "answer"), ("instruction", "output"))


@dataclass(frozen=True)
class PoolExample:
    row: int  # 1-based line number in the pool file
    prompt: str
    response: str
    system: str = ""

    def messages(self) -> list[dict[str, str]]:
        """The conversational form TRL's SFT / DPO trainers take (assistant-only loss needs roles)."""
        head = [{"role": "system", "content": self.system}] if self.system else []
        return head + [{"role": "user", "content": self.prompt}, {"role": "assistant", "content": self.response}]


def parse_row(obj: Any) -> tuple[str, str, str] | str:
    """(prompt, response, system) of one JSON row, or a short reason it is unusable."""
    if not isinstance(obj, dict):
        return "a row must be a JSON object"
    if "messages" in obj:
        msgs = obj["messages"]
        if not isinstance(msgs, list) or not all(isinstance(m, dict) and "role" in m and "content" in m for m in msgs):
            return "'messages' must be a list of {role, content} objects"
        if not msgs or msgs[-1]["role"] != "assistant":
            return "'messages' must end with an assistant turn"
        system = "\n".join(str(m["content"]) for m in msgs if m["role"] == "system")
        users = [m for m in msgs[:-1] if m["role"] != "system"]
        if not users:
            return "'messages' has no user turn before the assistant turn"
        # multi-turn history is flattened into the prompt; the last assistant turn is the target
        prompt = "\n\n".join(str(m["content"]) for m in users)
        return prompt, str(msgs[-1]["content"]), system
    for p, r in PAIRS:
        if p in obj and r in obj:
            prompt = str(obj[p])
            if p == "instruction" and obj.get("input"):
                prompt = f"{prompt}\n\n{obj['input']}"
            return prompt, str(obj[r]), ""
    keys = ", ".join(sorted(obj)[:8]) or "none"
    return ("expected 'messages' or one of " + ", ".join(f"{p}/{r}" for p, r in PAIRS) + f" (keys: {keys})")


def read_pool(path: str, limit: int | None = None) -> list[PoolExample]:
    """All rows of a JSONL pool (blank lines allowed). Raises EvalkitError naming file:line."""
    out: list[PoolExample] = []
    try:
        fh = open(path, encoding="utf-8")
    except OSError as exc:
        raise EvalkitError(f"training pool {path}: {exc.strerror or exc}") from exc
    with fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError as exc:
                raise EvalkitError(f"{path}:{n}: not valid JSON ({exc.msg})") from exc
            parsed = parse_row(obj)
            if isinstance(parsed, str):
                raise EvalkitError(f"{path}:{n}: {parsed}")
            prompt, response, system = parsed
            if not prompt.strip() or not response.strip():
                raise EvalkitError(f"{path}:{n}: empty prompt or response")
            out.append(PoolExample(n, prompt, response, system))
            if limit is not None and len(out) >= limit:
                break
    if not out:
        raise EvalkitError(f"training pool {path} has no rows")
    return out
