"""`plmkit bench --modes finetune` and `--seq-lens` on tiny configurations: records well formed,
both sides start from the same weights and take the same optimizer steps on the same examples,
their metrics close; bad options refused in one line (no timing assertions: the machine is
shared)."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from plmkit.bench import finetune as ft
from plmkit.bench import suite
from plmkit.bench.curves import MARKERS
from plmkit.cli import main
from plmkit.errors import UserError
from plmkit.tasks.options import FinetuneOptions

pytestmark = pytest.mark.usefixtures("one_thread")
OPTIONS = FinetuneOptions(epochs=1, batch_size=16, max_seq_len=64, progress=False)


@pytest.fixture(scope="module")
def setups(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ft.Setup]:
    """classify and SQuAD on bert-tiny: 40 training and 24 eval records of sentiment-en."""
    root = tmp_path_factory.mktemp("bench-finetune")
    runs = ft.parse_runs("classify:bert-tiny,squad:bert-tiny")
    return {s.task.name: s for s in ft.setups(runs, root, OPTIONS, 40, 24)}


def test_runs_are_task_and_model_or_a_one_line_error() -> None:
    assert ft.parse_runs("suite") == [("classify", "bert-small"), ("classify", "minilm"),
                                      ("squad", "bert-tiny")]
    for bad in ("classify", "tag:bert-tiny", "classify:bert-huge"):
        with pytest.raises(UserError, match="expected TASK:MODEL"):
            ft.parse_runs(bad)


def test_squad_questions_point_at_the_next_word(tmp_path: Path) -> None:
    source = tmp_path / "t.csv"
    with open(source, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([["text", "label"], ["the cat sat down", "a"],
                                 ["http://x.co only", "b"], ["  hello   big world ", "c"]])
    data = json.loads(ft.squad_from_csv(source, tmp_path / "q.json").read_text())
    paragraphs = data["data"][0]["paragraphs"]
    assert len(paragraphs) == 2  # two words and a URL: no question
    for p in paragraphs:
        qa = p["qas"][0]
        answer = qa["answers"][0]
        asked = qa["question"].removeprefix("Which word follows ").removesuffix("?")
        words = p["context"].split()
        assert words[words.index(asked) + 1] == answer["text"]
        assert p["context"][answer["answer_start"]:].startswith(answer["text"])


def test_plmkit_starts_from_the_weights_transformers_gets(setups: dict[str, ft.Setup],
                                                          tmp_path: Path) -> None:
    s = setups["classify"]
    frozen = dataclasses.replace(s, options=dataclasses.replace(s.options, lr=0.0))
    ft.run_plmkit(frozen, tmp_path / "out")  # lr 0: the weights it started from
    start = load_file(s.start / "model.safetensors")
    import plmkit

    ours = plmkit.load(tmp_path / "out").state_dict()
    assert torch.equal(ours["classifier.weight"], start["classifier.weight"])
    assert torch.equal(ours["backbone.pooler.dense.weight"], start["bert.pooler.dense.weight"])
    assert ft.plmkit_steps(tmp_path / "out") == 3  # 40 examples, batch 16


def check(r: ft.FinetuneRecord, task: str, examples: int) -> None:
    assert {f.name for f in dataclasses.fields(r)} == {
        "task", "model", "dtype", "examples", "batch", "max_len", "epochs", "steps", "hf_steps",
        "tokens", "reps", "plmkit_s", "hf_s", "plmkit_tok_s", "hf_tok_s", "ratio", "ratio_lo",
        "ratio_hi", "metric", "plmkit_metric", "hf_metric"}
    assert (r.task, r.model, r.dtype, r.batch, r.max_len, r.reps) == (
        task, "bert-tiny", "float32", 16, 64, 1)
    assert r.examples == examples and r.steps == r.hf_steps == math.ceil(examples / 16)
    assert r.tokens > examples  # every example's unpadded tokens, once (one epoch)
    assert all(math.isfinite(x) and x > 0 for x in (
        r.plmkit_s, r.hf_s, r.plmkit_tok_s, r.hf_tok_s, r.ratio, r.ratio_lo, r.ratio_hi))
    assert r.plmkit_tok_s * r.plmkit_s == pytest.approx(r.hf_tok_s * r.hf_s)  # one count


def test_classify_record_same_steps_and_close_accuracy(setups: dict[str, ft.Setup],
                                                       tmp_path: Path) -> None:
    r = ft.measure(setups["classify"], 1, tmp_path)
    check(r, "classify", 40)
    assert r.metric == "accuracy" and abs(r.plmkit_metric - r.hf_metric) <= 0.15
    assert list(tmp_path.iterdir()) == []  # each run's output removed
    text = ft.table([r])
    assert "classify:bert-tiny" in text and "3/3" in text


def test_squad_record_same_steps_and_close_f1(setups: dict[str, ft.Setup],
                                              tmp_path: Path) -> None:
    s = setups["squad"]
    windows = len(s.task.train_features(ft.Tokenizer.load(s.start), s.options))
    r = ft.measure(s, 1, tmp_path)
    check(r, "squad", windows)
    assert r.metric == "f1" and abs(r.plmkit_metric - r.hf_metric) <= 15.0


def test_report_goes_into_its_own_markdown_section(tmp_path: Path) -> None:
    record = ft.FinetuneRecord("classify", "bert-tiny", "float32", 40, 16, 64, 1.0, 3, 3, 900,
                               1, 2.0, 3.0, 450.0, 300.0, 1.5, 1.4, 1.6, "accuracy", 0.5, 0.52)
    doc, saved = tmp_path / "B.md", tmp_path / "ft.json"
    doc.write_text(f"# B\n\n{suite.BEGIN}\nsuite\n{suite.END}\n\n{ft.MARKERS[0]}\nold\n"
                   f"{ft.MARKERS[1]}\n")
    saved.write_text(json.dumps(ft.report([record], "plmkit bench --modes x")))
    assert ft.records(ft.read_report(saved)) == [record]
    assert main(["bench", "--modes", "finetune", "--from-json", str(saved),
                 "--markdown", str(doc)]) in (None, 0)
    text = doc.read_text()
    assert "\nsuite\n" in text and "old" not in text and "plmkit bench --modes x" in text
    assert "classify:bert-tiny" in text and "1.50x" in text
    saved.write_text("[]")
    with pytest.raises(UserError, match=r"ft\.json: not a plmkit bench finetune report"):
        ft.read_report(saved)


def test_sequence_length_curves_widen_positions_and_plot(tmp_path: Path) -> None:
    doc, png, saved = tmp_path / "B.md", tmp_path / "curves.png", tmp_path / "curves.json"
    main(["bench", "--models", "bert-tiny", "--modes", "train", "--seq-lens", "16,520",
          "--batch-size", "1", "--reps", "1", "--no-mfu", "--plot", str(png),
          "--markdown", str(doc), "--json", str(saved)])
    text = doc.read_text()
    assert MARKERS[0] in text and "![plmkit bench](curves.png)" in text
    assert suite.BEGIN not in text  # the suite's own section stays as it is
    assert "1x16" in text and "1x520" in text  # beyond bert-tiny's 512 positions
    assert [(r.seq, r.plmkit_peak_mb is not None) for r in suite.read_json(saved)["records"]] == [
        (16, True), (520, True)]
    png.unlink()
    main(["bench", "--from-json", str(saved), "--plot", str(png)])  # plotted again from JSON
    assert png.read_bytes().startswith(b"\x89PNG")
    assert suite.positions("bert-tiny", 520) == {"max_positions": 520}
    assert suite.positions("bert-tiny", 512) == {}


@pytest.mark.parametrize(("argv", "message"), [
    (["--modes", "finetune,train"], "--modes finetune runs alone"),
    (["--modes", "finetune", "--models", "classify:nope"], "expected TASK:MODEL"),
    (["--modes", "finetune", "--finetune-epochs", "0"], "--finetune-epochs 0: must be positive"),
    (["--modes", "finetune", "--dtypes", "float16"], "runs float32 or bfloat16"),
    (["--modes", "finetune", "--finetune-train", "-1"], "--finetune-train"),
    (["--modes", "train", "--seq-lens", "128,x"], "--seq-lens 128,x: expected comma-separated"),
    (["--modes", "train", "--plot", "c.png"], "--plot needs --seq-lens"),
    (["--modes", "finetune", "--from-json", "nowhere.json"], "not a plmkit bench finetune"),
])
def test_bad_options_exit_2_in_one_line(argv: list[str], message: str,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    try:
        code = main(["bench", *argv])
    except SystemExit as done:  # argparse: a bad number
        code = done.code
    assert code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert message in lines[-1]
    assert len(lines) == 1 or lines[0].startswith("usage:")  # argparse adds its usage
