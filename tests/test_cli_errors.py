"""Bad input: one clear line on stderr, exit 2, and nothing marked complete in the store."""

from __future__ import annotations

import sqlite3

import pytest

from evalkit.cli import main


def _complete_runs(store_path) -> int:
    try:
        db = sqlite3.connect(store_path)
        return db.execute("SELECT COUNT(*) FROM runs WHERE status='complete'").fetchone()[0]
    except sqlite3.Error:
        return 0


def _one_line_error(capsys, *fragments: str) -> None:
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1, err
    assert err[0].startswith("evalkit: error: ")
    for frag in fragments:
        assert frag in err[0], err[0]


@pytest.mark.parametrize(
    "extra, fragments",
    [
        (["--model", "definitely not a model"], ["unknown model form"]),
        (["--model", "/no/such/dir"], ["no such file or folder"]),
        (["--device", "cuda"], ["no CUDA GPU"]),
        (["--limit", "0"], ["--limit 0"]),
        (["--suite", "no-such-suite"], ["no such file"]),
    ],
)
def test_eval_bad_arguments(extra, fragments, tmp_path, data_dir, tiny_suite, capsys):
    import torch

    if "cuda" in extra and torch.cuda.is_available():
        pytest.skip("GPU present")
    store = str(tmp_path / "s.sqlite")
    args = ["--store", store, "eval", "--suite", str(tiny_suite), "--data-dir", str(data_dir), "--no-progress", *extra]
    assert main(args) == 2
    _one_line_error(capsys, *fragments)
    assert _complete_runs(store) == 0


def test_eval_corrupt_row_and_missing_file(tmp_path, data_dir, tiny_suite, capsys):
    store = str(tmp_path / "s.sqlite")
    bad = data_dir / "ifeval" / "input_data.jsonl"
    bad.write_text(bad.read_text() + "{not json}\n")
    assert main(["--store", store, "eval", "--suite", str(tiny_suite), "--data-dir", str(data_dir)]) == 2
    _one_line_error(capsys, f"{bad}:5: not valid JSON")
    (data_dir / "gsm8k" / "train.jsonl").unlink()
    assert main(["--store", store, "eval", "--suite", str(tiny_suite), "--data-dir", str(data_dir)]) == 2
    _one_line_error(capsys, "missing GSM8K train")
    assert _complete_runs(store) == 0


def test_eval_malformed_suite_names_line(tmp_path, data_dir, capsys):
    suite = tmp_path / "bad.yaml"
    suite.write_text("name: bad\nentries:\n  - name: a\n    task: gsm8k\n   oops: [\n")
    assert main(["--store", str(tmp_path / "s.sqlite"), "eval", "--suite", str(suite), "--data-dir", str(data_dir)]) == 2
    _one_line_error(capsys, f"{suite}:", "malformed YAML")


def test_unwritable_store(tmp_path, data_dir, tiny_suite, capsys):
    blocker = tmp_path / "afile"
    blocker.write_text("")
    assert main(["--store", str(blocker / "s.sqlite"), "eval", "--suite", str(tiny_suite), "--data-dir", str(data_dir)]) == 2
    _one_line_error(capsys, "cannot open for writing")


def test_runs_and_show_on_empty_store(tmp_path, capsys):
    from evalkit.store import RunStore

    store = str(tmp_path / "s.sqlite")
    RunStore(store)  # exists, holds no runs (a missing store is tested in test_store_identity)
    assert main(["--store", store, "runs", "--json"]) == 0
    assert capsys.readouterr().out.strip() == "[]"
    assert main(["--store", store, "show", "latest"]) == 2
    _one_line_error(capsys, "has no complete run")
