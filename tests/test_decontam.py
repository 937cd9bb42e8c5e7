"""Decontamination filter: 13-gram overlap on normalised words, then embedding cosine."""

from __future__ import annotations

import numpy as np

from trainloop.data.decontam import DecontamConfig, NGramIndex, decontaminate, shingles, words

EVAL = [
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May?",
    "Write a haiku about autumn.",
    "Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting. How much did she earn?",
]


def test_words_ignore_case_and_punctuation() -> None:
    assert words("Hello, WORLD!! 12$") == ["hello", "world", "12"]
    assert shingles("a b c", 13) == {("a", "b", "c")}
    assert len(shingles(" ".join(str(i) for i in range(20)), 13)) == 8


def test_ngram_catches_copies_reformatting_and_embedding_in_longer_text() -> None:
    cands = [
        EVAL[0],  # verbatim
        EVAL[0].upper().replace(",", " ;"),  # case and punctuation changed
        "Solve step by step. " + EVAL[2] + " Put the answer after ####.",  # pasted inside a prompt
        "Please write a haiku about autumn. Use five syllables first.",  # short eval item inside
        "Tom has 3 apples and buys 4 more. How many apples does he have now?",  # clean
    ]
    rep = decontaminate(cands, EVAL, embed=None)
    reasons = {d.index: (d.reason, d.eval_index) for d in rep.dropped}
    assert reasons == {0: ("ngram", 0), 1: ("ngram", 0), 2: ("ngram", 2), 3: ("ngram", 1)}
    assert rep.kept == [4]
    assert rep.counts() == {"candidates": 5, "kept": 1, "ngram": 4, "embedding": 0}


def test_twelve_shared_words_are_not_an_overlap() -> None:
    idx = NGramIndex(EVAL, 13)
    twelve = " ".join(words(EVAL[0])[:12])
    assert idx.hit(twelve + " and something else entirely different here") is None
    thirteen = " ".join(words(EVAL[0])[:13])
    assert idx.hit(thirteen)[0] == 0


def test_embedding_threshold_drops_paraphrases_only() -> None:
    # a controlled embedder: each text maps to a fixed vector, so the cosine is known exactly
    table = {
        "e0": [1.0, 0.0], "e1": [0.0, 1.0],
        "para": [0.95, np.sqrt(1 - 0.95**2)],  # cosine 0.95 to e0 -> dropped
        "near": [0.85, np.sqrt(1 - 0.85**2)],  # cosine 0.85 -> kept
    }

    def embed(texts):
        return np.array([table[t] for t in texts], dtype=np.float32)

    rep = decontaminate(["para", "near"], ["e0", "e1"], embed=embed, config=DecontamConfig(ngram=0, cosine=0.9))
    assert rep.kept == [1]
    assert [(d.index, d.reason, d.eval_index) for d in rep.dropped] == [(0, "embedding", 0)]
    assert abs(rep.dropped[0].score - 0.95) < 1e-5
    # chunking gives the same answer
    rep2 = decontaminate(["para", "near"] * 3, ["e0", "e1"], embed=embed, config=DecontamConfig(ngram=0, chunk=2))
    assert rep2.kept == [1, 3, 5]


def test_ngram_survivors_only_are_embedded() -> None:
    seen: list[str] = []

    def embed(texts):
        seen.extend(texts)
        return np.eye(len(texts), 8, dtype=np.float32)

    decontaminate([EVAL[1], "unrelated text"], EVAL, embed=embed)
    assert EVAL[1] not in seen[len(EVAL):]
