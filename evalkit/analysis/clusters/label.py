"""Cluster labels by class-based TF-IDF (BERTopic's c-TF-IDF).

All documents of a cluster form one class document; a term's weight in cluster c is
``tf(t, c) * log(1 + A / f(t))`` where tf is the term's share of the cluster's words, A the
average number of words per cluster and f(t) the term's count over all clusters. Terms frequent
in one cluster and rare elsewhere win; words every cluster has (and our text scaffolding, below)
do not. One change from BERTopic: a term counts once per document (binary counts), because a
small model's degenerate responses repeat one phrase hundreds of times and would otherwise
name the cluster after a single sample's loop.

What is counted: each cluster's FAILURE texts (texts.py's error descriptions: the wrong and the
right answer, the failed instruction ids and the failing output) against all clusters' failure
texts, so the terms name what goes wrong in the slice; a cluster without failures falls back to
all its members' texts (``class_docs``). The typical example shown with the terms is the member
closest to the centroid (``typical_member``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

# The scaffolding words texts.py writes around every sample: they describe the format, not the slice.
SCAFFOLD = frozenset(
    "ifeval instructions prompt response gsm8k math word problem gold answer extracted strict match "
    "flexible extract mmlu question choices chosen expected none model answered correct correctly wrong "
    "right failed followed kept output final target tail vs".split()
)
TOKEN = r"(?u)\b[^\W\d_][\w]+\b"  # words (underscores kept: IFEval ids like no_comma); no bare numbers


def ctfidf(docs_by_class: Mapping[int, Sequence[str]], top_n: int = 8) -> dict[int, list[tuple[str, float]]]:
    """Top ``top_n`` (term, weight) per class, weights rounded to 4 places, ties broken by term."""
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS, CountVectorizer

    classes = sorted(docs_by_class)
    docs = [doc for c in classes for doc in docs_by_class[c]]
    owner = np.array([row for row, c in enumerate(classes) for _ in docs_by_class[c]], dtype=int)
    if not classes or not any(doc.strip() for doc in docs):
        return {c: [] for c in classes}
    vec = CountVectorizer(token_pattern=TOKEN, lowercase=True, binary=True,
                          stop_words=sorted(ENGLISH_STOP_WORDS | SCAFFOLD))
    try:
        per_doc = vec.fit_transform(docs)
    except ValueError:  # nothing left after stop words
        return {c: [] for c in classes}
    from scipy.sparse import csr_matrix

    onehot = csr_matrix((np.ones(len(docs)), (owner, np.arange(len(docs)))), shape=(len(classes), len(docs)))
    counts = (onehot @ per_doc).toarray().astype(np.float64)  # classes x terms: documents containing the term
    terms = vec.get_feature_names_out()
    words_per_class = counts.sum(axis=1, keepdims=True)
    tf = counts / np.where(words_per_class > 0, words_per_class, 1.0)
    avg_words = counts.sum() / len(classes)
    idf = np.log(1.0 + avg_words / np.maximum(counts.sum(axis=0), 1.0))
    weights = tf * idf
    out: dict[int, list[tuple[str, float]]] = {}
    for row, c in enumerate(classes):
        order = sorted(np.nonzero(weights[row])[0], key=lambda j: (-weights[row, j], terms[j]))
        out[c] = [(str(terms[j]), round(float(weights[row, j]), 4)) for j in order[:top_n]]
    return out


def class_docs(texts: Sequence[str], failed: Sequence[bool], labels: Sequence[int]) -> dict[int, list[str]]:
    """Per cluster the texts c-TF-IDF counts: its failures' texts, or all its texts when none failed."""
    out: dict[int, list[str]] = {}
    for c in sorted(set(int(x) for x in labels)):
        mine = [i for i, x in enumerate(labels) if int(x) == c]
        out[c] = [texts[i] for i in mine if failed[i]] or [texts[i] for i in mine]
    return out


def typical_member(members: Sequence[int], dist: Sequence[float], failed: Sequence[bool]) -> int | None:
    """The member closest to the centroid, preferring a failing one (the slice is about failures)."""
    pool = [i for i in members if failed[i]] or list(members)
    return min(pool, key=lambda i: (dist[i], i)) if pool else None


def label_for(terms: Sequence[tuple[str, float]], task_mix: Mapping[str, int], n_terms: int = 4) -> str:
    """'ifeval: no_comma, commas, itinerary' — the dominant entry, then the top terms."""
    lead = max(sorted(task_mix), key=lambda e: task_mix[e]) if task_mix else ""
    mixed = "+" if len(task_mix) > 1 else ""
    words = ", ".join(t for t, _ in terms[:n_terms]) or "(no distinctive terms)"
    return f"{lead}{mixed}: {words}" if lead else words
