"""Flipped items on the compare page: :func:`flipped_items` on plain dicts (counts, caps,
pairing, pooled and non-binary metrics), the page written from two runs in a real RunStore
(counts, caps, model text escaped) and, in headless Chromium, no console errors plus a
screenshot (``reports/browser-test/compare-flips.png``)."""

from __future__ import annotations

import html
import re
from pathlib import Path

import pytest

from evalkit.analysis.paired import compare_runs, flipped_items
from evalkit.analysis.paired.flips import CAP, MODE_BINARY, MODE_CLUSTER, MODE_DELTA, TEXT_CAP
from evalkit.report.compare import write_compare_report
from evalkit.store import RunStore
from tests.test_paired import _make_run
from tests.test_report_browser import CHROMIUM, SCREENSHOT_DIR, chromium, uncaught

EVIL = "</script><b>bold</b><script>alert(1)</script>"
DOCS_PNG = Path(__file__).resolve().parents[1] / "docs" / "compare.png"


def _s(task: str, doc: int, metrics: dict, entry: str | None = None, out: str = "", prompt: str = "") -> dict:
    return {"entry": entry or task, "task": task, "doc_id": doc, "prompt": prompt or f"question {doc}", "target": str(doc),
            "responses": [out or f"answer {doc}"], "filtered": None, "metrics": metrics}


# ------------------------------------------------------------------ the pure function
def test_binary_flips_counts_directions_and_cap():
    a = [_s("t", d, {"em": float(d < 50)}) for d in range(100)]  # right on 0..49
    b = [_s("t", d, {"em": float(d < 20 or 90 <= d)}) for d in range(100)]  # 20..49 lost, 90..99 gained
    f = flipped_items(a, b, "t", cap=5)
    assert f.mode == MODE_BINARY and f.metric == "em" and f.n_paired == 100
    assert (f.n_right_to_wrong, f.n_wrong_to_right) == (30, 10)
    assert [i.doc_id for i in f.right_to_wrong] == [20, 21, 22, 23, 24]
    assert [i.doc_id for i in f.wrong_to_right] == [90, 91, 92, 93, 94]
    assert (f.more_right_to_wrong, f.more_wrong_to_right) == (25, 5)
    assert f.summary() == "30 right→wrong, 10 wrong→right of 100 paired"
    item = f.right_to_wrong[0]
    assert (item.value_a, item.value_b, item.input, item.target, item.output_a) == (1.0, 0.0, "question 20", "20", "answer 20")
    assert flipped_items(a, b, "t").right_to_wrong.__len__() == min(30, CAP)
    assert f.to_dict()["n_right_to_wrong"] == 30


def test_pairs_on_task_and_doc_id_within_the_entry_and_drops_missing_values():
    a = [_s("x", 0, {"acc": 1.0}, "mmlu"), _s("y", 0, {"acc": 0.0}, "mmlu"), _s("x", 1, {"acc": 1.0}, "mmlu"),
         _s("x", 2, {"acc": None}, "mmlu"), _s("x", 3, {"acc": 1.0}, "mmlu"), _s("g", 0, {"acc": 1.0}, "other")]
    b = [_s("x", 0, {"acc": 0.0}, "mmlu"), _s("y", 0, {"acc": 1.0}, "mmlu"), _s("x", 1, {"acc": True}, "mmlu"),
         _s("x", 2, {"acc": 0.0}, "mmlu"), _s("g", 0, {"acc": 0.0}, "other")]  # x/3 only in a
    f = flipped_items(a, b, "mmlu", metric="acc")
    assert f.n_paired == 3  # x/0, y/0, x/1 (x/2 has no value in a, x/3 is not in b, g is another entry)
    assert [(i.task, i.doc_id) for i in f.right_to_wrong] == [("x", 0)]
    assert [(i.task, i.doc_id) for i in f.wrong_to_right] == [("y", 0)]


def test_pooled_ratio_metric_flips_on_prompt_level_pass():
    a = [_s("ifeval", 0, {"inst": [True, True]}), _s("ifeval", 1, {"inst": [True, False]}),
         _s("ifeval", 2, {"inst": [True, False, False]}), _s("ifeval", 3, {"inst": [True]})]
    b = [_s("ifeval", 0, {"inst": [True, False]}), _s("ifeval", 1, {"inst": [True, True]}),
         _s("ifeval", 2, {"inst": [True, True, False]}), _s("ifeval", 3, {"inst": [True]})]
    f = flipped_items(a, b, "ifeval", metric="inst")
    assert f.mode == MODE_CLUSTER and f.binary and f.n_paired == 4
    assert [i.doc_id for i in f.right_to_wrong] == [0] and [i.doc_id for i in f.wrong_to_right] == [1]  # doc 2 fails in both


def test_non_binary_metric_lists_largest_changes():
    a = [_s("j", d, {"score": 0.5}) for d in range(6)]
    b = [_s("j", d, {"score": v}) for d, v in enumerate([0.5, 0.9, 0.1, 0.6, 0.45, 0.5])]
    f = flipped_items(a, b, "j", cap=2)
    assert f.mode == MODE_DELTA and not f.binary
    assert (f.n_up, f.n_down) == (2, 2) and f.summary() == "2 lower in b, 2 higher in b of 6 paired"
    assert [i.doc_id for i in f.largest_delta] == [1, 2] and f.more_largest_delta == 2
    assert f.largest_delta[0].delta == pytest.approx(0.4)


def test_outputs_multiple_choice_and_long_text():
    mc = {"entry": "m", "task": "m", "doc_id": 0, "prompt": "shot " * TEXT_CAP + "the question?", "target": 2, "responses": [],
          "filtered": None, "loglik": [-3.0, -1.0, -2.0], "metrics": {"acc": 1.0}}
    mc_b = {**mc, "loglik": [-1.0, -3.0, -2.0], "metrics": {"acc": 0.0}}
    [item] = flipped_items([mc], [mc_b], "m").right_to_wrong
    assert item.output_a.startswith("choice 1") and item.output_b.startswith("choice 0")
    assert len(item.input) == TEXT_CAP + 1 and item.input.endswith("the question?") and item.input[0] == "…"
    assert item.truncated and item.target == "2"
    gen = _s("g", 0, {"em": 1.0}, out="The answer is 7")
    gen_b = {**_s("g", 0, {"em": 0.0}, out="I think 8."), "filtered": {"strict-match": "8"}}
    [item] = flipped_items([gen], [gen_b], "g").right_to_wrong
    assert item.output_a == "The answer is 7" and item.output_b == "I think 8.\n[filtered] strict-match: 8"


def test_no_shared_documents():
    f = flipped_items([_s("t", 0, {"em": 1.0})], [_s("t", 1, {"em": 0.0})], "t")
    assert f.n_paired == 0 and f.binary and f.summary() == "0 right→wrong, 0 wrong→right of 0 paired"


# ------------------------------------------------------------------ the page, from a real store
GSM_Q = ("Natalia sold clips to {n} of her friends in April, and then she sold half as many clips in May. "
         "How many clips did Natalia sell altogether in April and May? Let's think step by step.")


def _runs_data(tuned: bool) -> dict[str, list[dict]]:
    """gsm8k: 60 docs, a right on the 30 even ones; b loses all 30 (more than the cap) and gains 3.
    ifeval: pooled instruction lists. One output of b is HTML that must stay inert."""
    gsm = []
    for d in range(60):
        right_a = d % 2 == 0
        right = (right_a and not tuned) or (tuned and d in (1, 3, 5))
        n = 48 + d
        out = (f"In May she sold {n} / 2 = {n // 2} clips. Altogether {n} + {n // 2} = {n + n // 2}. #### {n + n // 2}"
               if right else f"She sold {n} clips in April and {n * 2} in May, so {n * 3}. #### {n * 3}")
        if tuned and d == 0:
            out = EVIL
        gsm.append({"task": "gsm8k", "doc_id": d, "prompt": GSM_Q.format(n=n) + (" (long) " * 40 if d == 2 else ""),
                    "target": f"#### {n + n // 2}", "responses": [out], "filtered": {"strict-match": out.split("#### ")[-1]},
                    "metrics": {"exact_match,strict-match": float(right)}})
    ife = []
    for d in range(10):
        inst = [True, d % 2 == 0] if not tuned else [True, d % 3 == 0]
        ife.append({"task": "ifeval", "doc_id": d, "prompt": f"Write a haiku about item {d}, all lowercase.",
                    "target": None, "responses": [f"haiku {d} ({'tuned' if tuned else 'base'})"],
                    "metrics": {"prompt_level_strict_acc": all(inst), "inst_level_strict_acc": inst}})
    return {"gsm8k": gsm, "ifeval": ife}


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("flips")
    store = RunStore(str(tmp / "store.sqlite"))
    ra = _make_run(store, _runs_data(False), model="smollm2-135m")
    rb = _make_run(store, _runs_data(True), model="smollm2-135m+sft")
    comp = compare_runs(store, ra, rb, iters=300)
    path = Path(write_compare_report(comp, "flips1", str(tmp / "reports"), store=store))
    return tmp, store, comp, path


def test_page_counts_caps_and_ci(page):
    _, _, comp, path = page
    text = path.read_text(encoding="utf-8")
    gsm = comp.row("gsm8k", "exact_match,strict-match")
    assert (gsm.a_only, gsm.b_only) == (30, 3)  # the paired row agrees with the flips below
    section = re.search(r'<section class="flips" id="flips-gsm8k">(.*?)</section>', text, re.S).group(1)
    assert "30 right→wrong, 3 wrong→right of 60 paired" in section
    assert section.count('<div class="flip">') == CAP + 3 and "+5 more" in section
    assert "95% paired CI" in section and "significant" in section
    ife = re.search(r'<section class="flips" id="flips-ifeval">(.*?)</section>', text, re.S).group(1)
    assert "inst_level_strict_acc" in ife and "prompt-level pass/fail" in ife
    assert "<details" in section and "(long)" in section  # input behind an expand
    assert "<summary>input: …" in section  # a long input previews its end (a few-shot prompt's question)
    assert 'class="out-a"' in section and 'class="out-b"' in section


def test_model_text_is_escaped(page):
    _, _, _, path = page
    text = path.read_text(encoding="utf-8")
    assert EVIL not in text and "<script" not in text
    assert html.escape(EVIL) in text or "&lt;/script&gt;&lt;b&gt;" in text


def test_without_store_no_flips_and_kl_page_still_works(page):
    tmp, _, comp, _ = page
    plain = Path(write_compare_report(comp, "noflips", str(tmp / "reports"))).read_text(encoding="utf-8")
    assert "Flipped items" not in plain and 'id="rows"' in plain
    kl = {"policy": "p", "ref": "r", "mean_kl": 0.1, "k1": 0.1, "k3": 0.1,
          "per_prompt": [{"prompt": "hi", "n_tokens": 2, "kl": 0.1, "k1": 0.1, "k3": 0.1, "kl_sum": 0.2, "token_kl": [0.1, 0.1]}]}
    kl_page = Path(write_compare_report(None, "kl-flips", str(tmp / "reports"), kl=kl, store=page[1])).read_text(encoding="utf-8")
    assert "KL(policy" in kl_page and "Flipped items" not in kl_page


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary found")
def test_page_loads_without_console_errors_and_screenshot(page, capsys):
    tmp, _, _, path = page
    done = chromium(tmp / "profile-dom", "--dump-dom", path.as_uri())
    assert done.returncode == 0 and "</html>" in done.stdout, done.stderr[-2000:]
    assert not uncaught(done.stderr), uncaught(done.stderr)
    assert "<b>bold</b>" not in done.stdout and "30 right→wrong" in done.stdout
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    shot = SCREENSHOT_DIR / "compare-flips.png"
    shot.unlink(missing_ok=True)
    done = chromium(tmp / "profile-shot", "--hide-scrollbars", "--window-size=1280,1600", f"--screenshot={shot}", path.as_uri())
    assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
    assert not uncaught(done.stderr), uncaught(done.stderr)
    with capsys.disabled():
        print(f"\n[compare flips] screenshot: {shot}")


def test_docs_screenshot_is_small():
    assert DOCS_PNG.is_file() and DOCS_PNG.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert DOCS_PNG.stat().st_size < 300_000
