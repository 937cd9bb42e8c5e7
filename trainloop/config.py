"""What defines a loop: the model, the frozen suite, the targets, and every knob of a round.

Why one dataclass, hashed: ``make loop`` with the same arguments must find the same loop and
resume it, and *different* arguments must never silently continue an old loop. The loop id is
a hash of everything here except ``rounds`` (asking for more rounds continues the same loop).
Values come from defaults, then an optional YAML file (``--config``), then command-line flags.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import yaml

from evalkit.errors import EvalkitError
from trainloop.gate.decision import GateConfig
from trainloop.training.train import METHODS, TrainConfig

STRATEGIES = ("pool", "self", "teacher", "judge")


def opt(default: Any, help: str, **meta: Any) -> Any:
    """A :class:`LoopConfig` field with its command-line help. ``evalkit loop``'s flags are generated
    from these (:mod:`trainloop.cli`), so a default is written once, here. ``meta``: ``flag`` (the
    option's name when it is not ``--<field-name>``), ``choices``, ``env`` (a variable that gives
    the flag's default), ``cli=False`` (no flag)."""
    return field(default=default, metadata={"help": help, **meta})


@dataclass(frozen=True)
class LoopConfig:
    model: str = opt("smollm2-135m", "starting model (any MODEL form)")
    suite: str = opt("loop-demo", "frozen suite the loop measures every round on")
    targets: tuple[str, ...] = opt(("ifeval",), "comma-separated suite entries to improve", flag="--target")
    rounds: int = opt(2, "training rounds after round 0; more rounds continue a loop")
    method: str = opt("auto", "auto | sft | dpo | grpo | sft+dpo (auto: sft+dpo when pairs exist, else sft)")
    strategies: tuple[str, ...] = opt(("auto",), "comma-separated: auto | self | pool | teacher | judge (auto: self "
                                      "for IFEval targets, pool when a pool is given)", flag="--strategy")
    pool: str | None = opt(None, "JSONL training pool (pool and judge strategies; known answers for GSM8K self)")
    teacher: str | None = opt(None, "a stronger model (any MODEL form): its verified answers to new prompts "
                                    "(teacher strategy), an extra judge candidate")
    judge: str | None = opt(None, "pairwise judge model (any MODEL form) for the judge strategy")
    judge_margin: float = opt(0.2, "best - worst mean win probability needed for a judge-made DPO pair")
    budget: int = opt(200, "pool rows per round (pool and judge strategies)")
    self_prompts: int = opt(100, "new prompts (IFEval) or pool problems (GSM8K) per round for self, each sampled "
                                 "self_k times")
    self_k: int = opt(4, "samples per prompt (self strategy)")
    self_temperature: float = opt(0.8, "sampling temperature (self strategy)")
    self_max_new_tokens: int = opt(256, "longest sampled answer, in tokens")
    top_clusters: int = opt(8, "failure clusters targeted per round")
    decontam_ngram: int = opt(13, "words per n-gram of the decontamination overlap test (0: off)")
    decontam_cosine: float = opt(0.9, "embedding cosine at which a candidate counts as an eval item's paraphrase (>1: off)")
    train: TrainConfig = field(default_factory=TrainConfig)
    gate: GateConfig = field(default_factory=GateConfig)
    # data at volume (trainloop.strategies.volume): verified examples per targeted cluster per round; 0 = the
    # older k-sample path (self_prompts x self_k). A rolled-back round that fitted doubles both.
    data_per_cluster: int = opt(150, "verified examples per targeted cluster per round (0: self_prompts x self_k samples)")
    repairable_only: bool = opt(True, "volume data only for instruction types with a programmatic repair")
    max_prompts: int = opt(900, "new prompts per round at most (the source's limit; x2 with the data)")
    fit_holdout: int = opt(40, "verified training prompts held back for the fit check (0: no check)")
    fit_min_gain: float = opt(0.10, "the candidate must pass that many more held-back prompts (and p < 0.05)")
    control: str | None = opt(None, "random: also train a same-size random-data candidate (the control)",
                              choices=("random",))
    skip_judge_check: bool = opt(False, "use a judge that failed (or skipped) the agreement check "
                                        "(trainloop.gate.judge_check)")
    allow_underpowered: bool = opt(False, "train even when the power plan says the gate cannot detect the hoped-for gain")
    export_dir: str | None = opt(None, "copy each promoted model here too (must not exist)")
    kl_prompts: int = opt(20, "prompts KL(candidate || reference) is measured on")
    kl_max_new_tokens: int = opt(48, "tokens sampled per KL prompt")
    data_dir: str | None = opt(None, "local mirror of the datasets", env="EVALKIT_DATA_DIR")
    limit: int | None = opt(None, "cap every suite entry at N samples (tests, smoke runs)")
    batch_size: int = opt(8, "rows per forward pass (evaluation and sampling)")
    device: str = opt("auto", "where evaluation, sampling and KL run: auto | cpu | cuda[:N] (auto: cuda when "
                              "present; training uses a visible GPU either way)")
    dtype: str = opt("auto", "evaluation and sampling dtype: auto | bfloat16 | float16 | float32 (auto: bf16 on "
                             "GPUs and bf16-capable CPUs, else float32; KL is always scored in float32)")
    seed: int = opt(0, "seed of every sampled choice (data, training, bootstrap)")

    def __post_init__(self) -> None:
        if self.method != "auto" and self.method not in METHODS:
            raise EvalkitError(f"loop: METHOD must be auto or one of {', '.join(METHODS)} (got '{self.method}')")
        bad = [s for s in self.strategies if s not in STRATEGIES + ("auto",)]
        if bad:
            raise EvalkitError(f"loop: unknown strategy '{bad[0]}' (choose from auto, {', '.join(STRATEGIES)})")
        if self.rounds < 0:
            raise EvalkitError("loop: ROUNDS must be 0 (round 0 and the power plan only) or more")
        if not self.targets:
            raise EvalkitError("loop: TARGET names no suite entry")
        if self.control not in (None, "random"):
            raise EvalkitError(f"loop: control must be 'random' or unset (got '{self.control}')")
        if self.control and not self.ifeval_targets():
            raise EvalkitError("loop: control: random draws same-size data from the verified IFEval source; the "
                               f"targets {', '.join(self.targets)} have no such source (target an ifeval entry or drop control)")
        if self.data_per_cluster < 0 or self.max_prompts < 1 or self.fit_holdout < 0:
            raise EvalkitError("loop: data_per_cluster and fit_holdout must be >= 0, max_prompts >= 1")

    def identity(self) -> str:
        d = self.to_dict()
        d.pop("rounds")
        for key in ("device", "dtype"):  # "auto" is left out, so loops from before these settings keep their ids
            if d.get(key) == "auto":
                d.pop(key)
        return "loop-" + hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self), default=list))

    def resolved_strategies(self) -> tuple[str, ...]:
        """``auto``: self for IFEval targets (and GSM8K targets when a pool gives known answers),
        pool when a pool is given, teacher next to self, judge when a judge and a pool are given."""
        if "auto" not in self.strategies:
            return self.strategies
        out = []
        if self.ifeval_targets() or (self.gsm8k_targets() and self.pool):
            out.append("self")
        if self.pool:
            out.append("pool")
        if self.teacher and self.ifeval_targets():
            out.append("teacher")
        if self.judge and self.pool:
            out.append("judge")
        return tuple(out)

    def ifeval_targets(self) -> tuple[str, ...]:
        return tuple(t for t in self.targets if t.startswith("ifeval"))

    def gsm8k_targets(self) -> tuple[str, ...]:
        return tuple(t for t in self.targets if t.startswith("gsm8k"))


def from_mapping(data: dict[str, Any], base: LoopConfig | None = None, where: str = "loop config") -> LoopConfig:
    """Overlay ``data`` (YAML or flags; ``train``/``gate`` as nested maps) on ``base``."""
    base = base or LoopConfig()
    top = {f.name for f in fields(LoopConfig)}
    unknown = sorted(set(data) - top)
    if unknown:
        raise EvalkitError(f"{where}: unknown key '{unknown[0]}' (known: {', '.join(sorted(top))})")
    kw: dict[str, Any] = {}
    for k, v in data.items():
        if v is None and k not in ("pool", "teacher", "judge", "data_dir", "limit", "control", "export_dir"):
            continue
        if k == "train":
            kw[k] = _nested(TrainConfig, base.train, v, f"{where}: train")
        elif k == "gate":
            kw[k] = _nested(GateConfig, base.gate, v, f"{where}: gate")
        elif k in ("targets", "strategies"):
            kw[k] = tuple(x.strip() for x in (v.split(",") if isinstance(v, str) else v) if str(x).strip())
        else:
            kw[k] = v
    try:
        return replace(base, **kw)
    except TypeError as exc:
        raise EvalkitError(f"{where}: {exc}") from exc


def _nested(cls: type, base: Any, value: Any, where: str) -> Any:
    if not isinstance(value, dict):
        raise EvalkitError(f"{where} must be a mapping")
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(value) - names)
    if unknown:
        raise EvalkitError(f"{where}: unknown key '{unknown[0]}' (known: {', '.join(sorted(names))})")
    if "target_modules" in value and isinstance(value["target_modules"], list):
        value = {**value, "target_modules": tuple(value["target_modules"])}
    return replace(base, **value)


def load_config(path: str | None, overrides: dict[str, Any]) -> LoopConfig:
    cfg = LoopConfig()
    if path:
        try:
            with open(path, encoding="utf-8") as fh:
                data = yaml.safe_load(fh) or {}
        except OSError as exc:
            raise EvalkitError(f"loop config {path}: {exc.strerror or exc}") from exc
        except yaml.YAMLError as exc:
            raise EvalkitError(f"loop config {path}: not valid YAML ({exc})") from exc
        if not isinstance(data, dict):
            raise EvalkitError(f"loop config {path}: expected a mapping at the top")
        cfg = from_mapping(data, cfg, f"loop config {path}")
    return from_mapping({k: v for k, v in overrides.items() if v is not None}, cfg, "loop arguments")
