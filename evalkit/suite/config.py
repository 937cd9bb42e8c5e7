"""Suite YAML schema and loader.

A suite file::

    name: core
    description: ...
    entries:
      - name: gsm8k          # unique; the key results are reported under
        engine: lm-eval      # lm-eval (default); more engines register themselves
        task: gsm8k          # any lm-eval task or group name
        num_fewshot: 5
        limit: 50            # per task (per subject for MMLU)
        gen_kwargs: {max_gen_toks: 256}
        apply_chat_template: false

Unknown keys and wrong types are errors that name the file and line, because a typo in a
frozen suite silently changes what "the same suite" measures.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from typing import Any

import yaml

from evalkit.errors import EvalkitError
from evalkit.registry import ENGINES

SUITES_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "suites")


@dataclass(frozen=True)
class SuiteEntry:
    name: str
    task: str
    engine: str = "lm-eval"
    num_fewshot: int | None = None
    limit: int | None = None
    gen_kwargs: dict[str, Any] | None = None
    apply_chat_template: bool = False
    fewshot_as_multiturn: bool | None = None
    system_instruction: str | None = None
    data: str | None = None  # local-mirror adapter name; default: inferred from the task name
    data_files: dict[str, str] | None = None  # explicit split -> file (json/jsonl/csv) for any task
    calibration: bool = True  # multiple-choice tasks: ECE + Brier from choice log-likelihoods
    batch_size: int | None = None
    samples: int | None = None  # n sampled responses per problem (pass@k / maj@k; inspect epochs)
    temperature: float | None = None  # sampling temperature when samples > 1 (default 0.8)
    top_p: float | None = None
    ks: list[int] | None = None  # pass@k / maj@k for these k <= samples (default 1, samples)
    judge: str | None = None  # judge engine: the judging model string (default smollm2-135m)
    baseline: str | None = None  # judge engine: model whose greedy responses are the baseline
    confirm_fraction: float | None = None  # loop targets: share of items held out for confirmation (evalkit.suite.split)
    include_path: tuple[str, ...] | None = None  # lm-eval: the user's task folders (relative to the suite file)
    seed: int = 1234
    description: str = ""
    line: int = field(default=0, compare=False)  # where the entry starts in its file

    def as_config(self) -> dict[str, Any]:
        """The entry as plain data (what the suite hash covers), without its file position.

        Unset (None) keys are left out, so adding an optional key to the schema does not change
        the hash of every existing suite."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "line" and getattr(self, f.name) is not None}


@dataclass(frozen=True)
class Suite:
    name: str
    path: str
    entries: tuple[SuiteEntry, ...]
    description: str = ""
    include_path: tuple[str, ...] = ()  # suite-level task folders (absolute) for every lm-eval entry

    def entry(self, name: str) -> SuiteEntry:
        for e in self.entries:
            if e.name == name:
                return e
        raise EvalkitError(f"suite {self.name}: no entry named '{name}'")


_TYPES: dict[str, tuple[type, ...]] = {
    "name": (str,), "task": (str,), "engine": (str,), "num_fewshot": (int,), "limit": (int,),
    "gen_kwargs": (dict,), "apply_chat_template": (bool,), "fewshot_as_multiturn": (bool,),
    "system_instruction": (str,), "data": (str,), "data_files": (dict,), "calibration": (bool,),
    "batch_size": (int,), "seed": (int,), "description": (str,), "samples": (int,),
    "temperature": (float, int), "top_p": (float, int), "ks": (list,),
    "judge": (str,), "baseline": (str,), "confirm_fraction": (float,), "include_path": (str, list),
}

# engines that resolve tasks from task folders (a suite-level / CLI include_path applies to these)
INCLUDE_PATH_ENGINES = ("lm-eval",)


def resolve_include_path(value: Any, base_dir: str, where: str) -> tuple[str, ...]:
    """``include_path:`` (one folder or a list) as absolute folders that exist, relative to ``base_dir``.

    ``where`` prefixes the one-line error (e.g. ``suite file.yaml:7``)."""
    pre = f"{where}: " if where else ""
    items = [value] if isinstance(value, str) else list(value or [])
    out: list[str] = []
    for item in items:
        if not isinstance(item, str) or not item:
            raise EvalkitError(f"{pre}'include_path' must be a folder or a list of folders")
        full = os.path.abspath(os.path.join(base_dir, os.path.expanduser(item)))
        if not os.path.isdir(full):
            raise EvalkitError(f"{pre}include_path '{item}': no such folder ({full})")
        if full not in out:
            out.append(full)
    return tuple(out)


def resolve_suite_path(ref: str) -> str:
    """A path to a YAML file, or a bare name looked up in the project's ``suites/`` folder."""
    candidates = [ref]
    if not ref.endswith((".yaml", ".yml")):
        candidates += [os.path.join(SUITES_DIR, ref + ".yaml"), os.path.join("suites", ref + ".yaml")]
    for cand in candidates:
        if os.path.isfile(cand):
            return cand
    raise EvalkitError(f"suite '{ref}': no such file (looked in {', '.join(candidates)})")


def load_suite(ref: str) -> Suite:
    path = resolve_suite_path(ref)
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}" if mark else path
        raise EvalkitError(f"suite {where}: malformed YAML ({exc.problem or exc.context})") from exc
    except (OSError, yaml.YAMLError) as exc:
        raise EvalkitError(f"suite {path}: cannot read ({exc})") from exc
    if not isinstance(data, dict) or node is None:
        raise EvalkitError(f"suite {path}:1: expected a mapping with 'name' and 'entries'")
    top_lines = {k.value: k.start_mark.line + 1 for k, _ in node.value}
    unknown = set(data) - {"name", "description", "entries", "include_path"}
    if unknown:
        key = sorted(unknown)[0]
        raise EvalkitError(
            f"suite {path}:{top_lines.get(key, 1)}: unknown key '{key}' (allowed: name, description, include_path, entries)")
    suite_dir = os.path.dirname(os.path.abspath(path))
    include = resolve_include_path(data.get("include_path"), suite_dir, f"suite {path}:{top_lines.get('include_path', 1)}")
    entries_raw = data.get("entries")
    if not isinstance(entries_raw, list) or not entries_raw:
        raise EvalkitError(f"suite {path}:{top_lines.get('entries', 1)}: 'entries' must be a non-empty list")
    entries_node = dict((k.value, v) for k, v in node.value)["entries"]
    entries: list[SuiteEntry] = []
    for raw, enode in zip(entries_raw, entries_node.value):
        entries.append(_parse_entry(path, raw, enode))
    names = [e.name for e in entries]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        dup = next(e for e in entries[::-1] if e.name == dupes[0])
        raise EvalkitError(f"suite {path}:{dup.line}: duplicate entry name '{dupes[0]}'")
    name = data.get("name") or os.path.splitext(os.path.basename(path))[0]
    if not isinstance(name, str):
        raise EvalkitError(f"suite {path}:{top_lines.get('name', 1)}: 'name' must be a string")
    return Suite(name=name, path=os.path.abspath(path), entries=tuple(entries), description=str(data.get("description") or ""),
                 include_path=include)


def _parse_entry(path: str, raw: Any, node: yaml.Node) -> SuiteEntry:
    line = node.start_mark.line + 1
    if not isinstance(raw, dict):
        raise EvalkitError(f"suite {path}:{line}: each entry must be a mapping")
    key_lines = {k.value: k.start_mark.line + 1 for k, _ in node.value}
    for key, value in raw.items():
        if key not in _TYPES:
            raise EvalkitError(f"suite {path}:{key_lines.get(key, line)}: unknown entry key '{key}'")
        types = _TYPES[key]
        ok = value is None or isinstance(value, types)
        if isinstance(value, bool) and bool not in types:
            ok = False
        if not ok:
            raise EvalkitError(
                f"suite {path}:{key_lines.get(key, line)}: '{key}' must be {'/'.join(t.__name__ for t in types)}, got {type(value).__name__}"
            )
    for required in ("name", "task"):
        if not raw.get(required):
            raise EvalkitError(f"suite {path}:{line}: entry is missing '{required}'")
    engine = raw.get("engine") or "lm-eval"
    if engine not in ENGINES:  # names only: no engine is imported to validate a suite
        raise EvalkitError(f"suite {path}:{key_lines.get('engine', line)}: unknown engine '{engine}' (known: {', '.join(ENGINES.names())})")
    for key in ("limit", "samples"):
        if raw.get(key) is not None and raw[key] <= 0:
            raise EvalkitError(f"suite {path}:{key_lines.get(key, line)}: '{key}' must be positive")
    ks = raw.get("ks")
    if ks is not None:
        n = raw.get("samples") or 1
        if not all(isinstance(k, int) and not isinstance(k, bool) and 1 <= k <= n for k in ks):
            raise EvalkitError(f"suite {path}:{key_lines.get('ks', line)}: 'ks' must be whole numbers from 1 to samples ({n})")
    if raw.get("include_path") is not None:
        where = f"suite {path}:{key_lines.get('include_path', line)}"
        if engine not in INCLUDE_PATH_ENGINES:
            raise EvalkitError(f"{where}: 'include_path' is for lm-eval entries (engine '{engine}' does not use it)")
        resolve_include_path(raw["include_path"], os.path.dirname(os.path.abspath(path)), where)  # exists: one line here
    kwargs = {k: v for k, v in raw.items() if v is not None}
    if "include_path" in kwargs:  # as written (relative to the suite file): machine-independent
        kwargs["include_path"] = (kwargs["include_path"],) if isinstance(kwargs["include_path"], str) else tuple(kwargs["include_path"])
    kwargs["engine"] = engine
    return SuiteEntry(line=line, **kwargs)
