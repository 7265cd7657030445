"""Bad model directories and bad task files (issue 22, items 3, 4 and 8): one line naming the
file and the problem, exit code 2, nothing written, and no allocation the config asks for
before its sizes are checked against the weights; fine-tuning refuses a bad eval file before
its first step."""

from __future__ import annotations

import hashlib
import json
import resource
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import safetensors.torch
import torch

import plmkit
from plmkit.cli import main
from plmkit.models import build, preset_config
from plmkit.tokenizers import train_tokenizer
from plmkit.training import Trainer
from plmkit.training.modeldir import save_model

MB = 1024  # ru_maxrss is in KiB on Linux


def tree(path: Path) -> dict[str, str]:
    """Every file under `path` with its sha256."""
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def dirs(tmp_path_factory: pytest.TempPathFactory, tweets: list[str]) -> dict[str, Path]:
    """A tiny BERT as a plmkit directory and as a transformers one, each with its tokenizer."""
    root = tmp_path_factory.mktemp("models")
    tok = train_tokenizer("wordpiece", iter(tweets[:500]), 500)
    model = build(preset_config("bert-tiny", vocab_size=tok.vocab_size, max_positions=64))
    save_model(model, root / "native")
    tok.save(root / "native" / "tokenizer")
    plmkit.save_hf(model, root / "hf")
    tok.save(root / "hf")
    plmkit.save_hf(build(preset_config("electra-tiny", vocab_size=tok.vocab_size,
                                       max_positions=64)), root / "electra")
    tok.save(root / "electra")
    (root / "texts.txt").write_text("one text\nand another\n")
    return {"root": root, "native": root / "native", "hf": root / "hf",
            "electra": root / "electra"}


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    capsys.readouterr()
    code = main(argv)
    return code, capsys.readouterr().err


def assert_one_line(err: str, message: str) -> None:
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert message in err, err


# --- item 4: a model directory's config against its weights -----------------------------------

def edit_json(name: str, **changes: Any) -> Callable[[Path], None]:
    def edit(directory: Path) -> None:
        data = json.loads((directory / name).read_text())
        target = data["config"] if name == "plmkit.json" else data
        target.update(changes)
        (directory / name).write_text(json.dumps(data))
    return edit


def write(name: str, content: str) -> Callable[[Path], None]:
    def edit(directory: Path) -> None:
        (directory / name).write_text(content)
    return edit


def bin_weights(legacy: bool = False, payload: Any = None) -> Callable[[Path], None]:
    """model.safetensors replaced by a pytorch_model.bin (old format, or other content)."""
    def edit(directory: Path) -> None:
        state = safetensors.torch.load_file(directory / "model.safetensors")
        (directory / "model.safetensors").unlink()
        torch.save(state if payload is None else payload, directory / "pytorch_model.bin",
                   _use_new_zipfile_serialization=not legacy)
    return edit


class Hostile:
    def __reduce__(self) -> tuple[Any, ...]:
        return (print, ("this must never run",))


BAD_MODELS = [  # (id, directory, damage, message)
    ("layers-1e6", "hf", edit_json("config.json", num_hidden_layers=1_000_000),
     "config.json: num_hidden_layers 1000000 does not fit the weights, which hold 2 layers"),
    ("layers-3", "hf", edit_json("config.json", num_hidden_layers=3),
     "config.json: num_hidden_layers 3 does not fit the weights, which hold 2 layers"),
    ("hidden-1e9-float", "hf", edit_json("config.json", hidden_size=1e9),
     "config.json: hidden_size 1000000000.0 is not an integer"),
    ("hidden-1e9", "hf", edit_json("config.json", hidden_size=10**9),
     "config.json: cannot build the model it describes (RuntimeError: Storage size"),
    ("negative-heads", "hf", edit_json("config.json", num_attention_heads=-4),
     "config.json: num_attention_heads -4 is not a positive size below 2^31"),
    ("heads-not-dividing", "hf", edit_json("config.json", num_attention_heads=3),
     "config.json: hidden_size 128 is not divisible by num_heads 3"),
    ("string-size", "hf", edit_json("config.json", intermediate_size="512"),
     "config.json: intermediate_size '512' is not an integer"),
    ("dropout-2", "hf", edit_json("config.json", hidden_dropout_prob=2.0),
     "config.json: hidden_dropout_prob 2.0 is not a probability in [0, 1]"),
    ("vocab-1e9", "hf", edit_json("config.json", vocab_size=10**9),
     "bert.embeddings.word_embeddings.weight has shape (500, 128), config.json implies "
     "(1000000000, 128)"),
    ("ffn-size", "hf", edit_json("config.json", intermediate_size=1024),
     "bert.encoder.layer.0.intermediate.dense.weight has shape (512, 128), config.json "
     "implies (1024, 128)"),
    ("config-list", "hf", write("config.json", "[]"), "config.json: not a JSON object"),
    ("generator-config-list", "electra", write("generator/config.json", "[]"),
     "generator/config.json: not a JSON object"),
    ("activation-list", "hf", edit_json("config.json", hidden_act=["gelu"]),
     "hidden_act=['gelu'] is not supported"),
    ("negative-eps", "hf", edit_json("config.json", layer_norm_eps=-1.0),
     "config.json: layer_norm_eps -1.0 is not positive"),
    ("legacy-bin", "hf", bin_weights(legacy=True),
     "pytorch_model.bin: not a zip-format torch file"),
    ("hostile-bin", "hf", bin_weights(payload={"x": Hostile()}),
     "pytorch_model.bin: not a plain tensor file"),
    ("native-layers-1e6", "native", edit_json("plmkit.json", num_layers=1_000_000),
     "plmkit.json: num_layers 1000000 does not fit the weights, which hold 2 layers"),
    ("native-negative", "native", edit_json("plmkit.json", hidden_size=-128),
     "plmkit.json: hidden_size -128 is not a positive size below 2^31"),
    ("native-positions", "native", edit_json("plmkit.json", max_positions=4096),
     "model.safetensors: encoder.embeddings.positions.weight has shape (64, 128), plmkit.json "
     "implies (4096, 128)"),
]


@pytest.mark.parametrize(("kind", "damage", "message"), [b[1:] for b in BAD_MODELS],
                         ids=[b[0] for b in BAD_MODELS])
def test_bad_model_directory_is_refused_before_allocation(
        dirs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str,
        damage: Callable[[Path], None], message: str) -> None:
    model = tmp_path / "model"
    shutil.copytree(dirs[kind], model)
    damage(model)
    before = tree(tmp_path)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    code, err = run_cli(["embed", "--model", str(model), "--input", str(dirs["root"] / "texts.txt"),
                         "--output", str(tmp_path / "vectors.npy")], capsys)
    assert code == 2
    assert_one_line(err, message)
    assert tree(tmp_path) == before
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak < 300 * MB


def test_the_intact_directories_load(dirs: dict[str, Path]) -> None:
    """The table's damage is what fails: both directories load as they are."""
    native, hf = plmkit.load(dirs["native"]), plmkit.load(dirs["hf"])
    assert all(torch.equal(a, b) for a, b in zip(native.state_dict().values(),
                                                 hf.state_dict().values(), strict=True))


def test_albert_shares_its_layers_so_more_of_them_fit(tmp_path: Path) -> None:
    """A layer count above the weights' is refused only for models with weights per layer:
    ALBERT runs one shared block 12 times from a file that holds it once."""
    plmkit.save_hf(build(preset_config("albert-tiny")), tmp_path)
    edit_json("config.json", num_hidden_layers=12)(tmp_path)
    assert plmkit.load(tmp_path).config.num_layers == 12


# --- items 3 and 8: task files checked before the first step ----------------------------------

def jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def squad(path: Path, start: int = 10) -> Path:
    qas = [{"id": f"q{i}", "question": "Where?",
            "answers": [{"text": "Paris", "answer_start": start if i == 2 else 10}]}
           for i in (1, 2)]
    path.write_text(json.dumps({"data": [{"paragraphs": [{"context": "We met in Paris.",
                                                           "qas": qas}]}]}))
    return path


def conll(path: Path, tags: tuple[str, ...]) -> Path:
    path.write_text("".join(f"Anna {t}\nsmiled O\n\n" for t in tags))
    return path


def task_files(root: Path) -> dict[str, Path]:
    sentiment = [{"text": f"text number {i}", "label": ("neg", "pos")[i % 2]} for i in range(8)]
    endings = ["a", "b", "c", "d"]
    choices = [{"context": f"context {i}", "endings": endings, "label": i % 4} for i in range(4)]
    return {
        "classify-train": jsonl(root / "train.jsonl", sentiment),
        "classify-dev": jsonl(root / "dev.jsonl", [*sentiment[:1], {"text": "x",
                                                                    "label": "neutral"}]),
        "swag-train": jsonl(root / "swag.jsonl", choices),
        "swag-dev-count": jsonl(root / "swag-dev.jsonl", [choices[0], {**choices[1],
                                                                       "endings": endings[:3]}]),
        "swag-dev-label": jsonl(root / "swag-label.jsonl", [choices[0], {**choices[1],
                                                                         "label": 4}]),
        "squad-train": squad(root / "squad.json"),
        "squad-dev": squad(root / "squad-dev.json", start=-6),
        "tag-train": conll(root / "train.conll", ("B-PER", "O")),
        "tag-dev": conll(root / "dev.conll", ("B-PER", "B-ORG")),
    }


BAD_TASK_FILES = [  # (id, task, train, eval, message)
    ("classify-unknown-label", "classify", "classify-train", "classify-dev",
     "dev.jsonl:2: label 'neutral' is not in the training labels ['neg', 'pos']"),
    ("swag-ending-count", "swag", "swag-train", "swag-dev-count",
     "swag-dev.jsonl:2: 3 endings, but the first record has 4"),
    ("swag-label-range", "swag", "swag-train", "swag-dev-label",
     "swag-label.jsonl:2: label 4 is not in 0..3"),
    ("squad-negative-offset", "squad", "squad-train", "squad-dev",
     "squad-dev.json: question 'q2': answer_start -6 is negative"),
    ("squad-train-offset", "squad", "squad-dev", None,
     "squad-dev.json: question 'q2': answer_start -6 is negative"),
    ("tag-unknown-tag", "tag", "tag-train", "tag-dev",
     "dev.conll:4: tag 'B-ORG' is not in the training tags ['O', 'B-PER']"),
]


@pytest.mark.parametrize(("task", "train", "eval", "message"), [b[1:] for b in BAD_TASK_FILES],
                         ids=[b[0] for b in BAD_TASK_FILES])
def test_bad_task_file_stops_finetuning_before_the_first_step(
        dirs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch, task: str, train: str, eval: str | None,
        message: str) -> None:
    files = task_files(tmp_path)
    out = tmp_path / "out"
    monkeypatch.setattr(Trainer, "train", lambda *a, **k: pytest.fail("training started"))
    before, model_before = tree(tmp_path), tree(dirs["native"])
    argv = ["finetune", "--task", task, "--model", str(dirs["native"]), "--train",
            str(files[train]), "--out", str(out), "--max-seq-len", "32", "--no-progress"]
    code, err = run_cli(argv + (["--eval", str(files[eval])] if eval else []), capsys)
    assert code == 2
    assert_one_line(err, message)
    assert tree(tmp_path) == before and not out.exists()
    assert tree(dirs["native"]) == model_before


# --- a fine-tuned model directory's own files ---------------------------------------------------

@pytest.fixture(scope="module")
def finetuned(dirs: dict[str, Path]) -> Path:
    root = dirs["root"]
    train = jsonl(root / "sentiment.jsonl", [{"text": f"text {i}", "label": ("a", "b")[i % 2]}
                                            for i in range(8)])
    out = root / "finetuned"
    assert main(["finetune", "--task", "classify", "--model", str(dirs["native"]), "--train",
                 str(train), "--out", str(out), "--epochs", "1", "--max-seq-len", "16",
                 "--no-progress"]) == 0
    return out


@pytest.mark.parametrize(("content", "message"), [
    ("{", "finetune.json: not a JSON file of fine-tuning options (Expecting"),
    ("[1]", "finetune.json: not a JSON object of fine-tuning options"),
    ('{"batch_size": "8"}', "finetune.json: batch_size '8' is not an integer"),
    ('{"batch_size": 0}', "finetune.json: batch_size 0 is not a positive size below 2^31"),
    ('{"max_seq_len": 1.5}', "finetune.json: max_seq_len 1.5 is not an integer or null"),
], ids=["invalid-json", "list", "string", "zero", "float"])
def test_bad_finetune_options_are_one_line(finetuned: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str], content: str,
                                           message: str) -> None:
    model = tmp_path / "model"
    shutil.copytree(finetuned, model)
    (model / "finetune.json").write_text(content)
    before = tree(tmp_path)
    code, err = run_cli(["evaluate", "--model", str(model), "--eval",
                         str(finetuned.parent / "sentiment.jsonl")], capsys)
    assert code == 2
    assert_one_line(err, message)
    assert tree(tmp_path) == before
