"""Checkpoints to continue pretraining from (`plmkit pretrain --model DIR`), and the
transformers export of a run that keeps what its checkpoint's config.json said.

DIR is a plmkit model directory (a pretraining run) or a transformers model directory. Its
config gives the model's shape, its weights every tensor they hold; the heads an objective
needs and DIR lacks are built fresh and named (`fresh_parts`).
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from plmkit.errors import UserError
from plmkit.interop.export import save_hf
from plmkit.interop.hf import load_hf_fresh, read_hf_config
from plmkit.interop.native import load, load_model, read_native_config
from plmkit.models import build
from plmkit.models.registry import all_presets
from plmkit.training.modeldir import NATIVE_CONFIG, is_native

if TYPE_CHECKING:
    from plmkit.tasks.embed import EmbeddingSetup

SOURCE_CONFIG = "source-config.json"  # {part: the config.json it was continued from}
# what a transformers or plmkit tokenizer directory may hold
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "vocab.txt", "vocab.json", "merges.txt", "added_tokens.json",
                   "spiece.model", "sentencepiece.bpe.model")


def is_checkpoint(model: str | Path) -> bool:
    """Whether `--model` names a model directory to continue from (a preset's name wins over
    a directory of that name)."""
    return str(model) not in all_presets() and Path(model).is_dir()


def checkpoint_config(directory: Path, generator: Path | None = None) -> Any:
    """The plmkit config of the model in `directory` (ELECTRA: with `generator`'s sizes)."""
    if is_native(directory):
        if generator is not None:
            raise UserError(f"--generator {generator}: {directory} is a plmkit run, whose "
                            "generator (if any) is in its own weights")
        _, config, task = read_native_config(directory)
        if task is not None:
            raise UserError(f"--model {directory}: a fine-tuned model; continue pretraining "
                            "from the run it was fine-tuned from")
        return config
    if not (directory / "config.json").is_file():
        raise UserError(f"--model {directory}: not a model directory (no {NATIVE_CONFIG} or "
                        "config.json)")
    return read_hf_config(directory, _parts(generator))[1]


def _parts(generator: Path | None) -> dict[str, Path]:
    return {"generator": generator} if generator is not None else {}


def load_checkpoint(directory: Path, config: Any,
                    generator: Path | None = None) -> tuple[nn.Module, list[str]]:
    """A model of `config` (the checkpoint's own, with fields that add heads changed) holding
    the weights of `directory`, and the parts (top-level modules) that started fresh."""
    if is_native(directory):
        source, fresh = load_model(directory), []
    else:
        with warnings.catch_warnings():  # `fresh_parts` names them in one line
            warnings.filterwarnings("ignore", message=".*no weights for")
            source, fresh = load_hf_fresh(directory, _parts(generator))
    if config == source.config:  # type: ignore[attr-defined]
        return source, fresh_parts(fresh)
    model = build(config)
    state, own = source.state_dict(), model.state_dict()
    for key, value in state.items():
        if key in own and own[key].shape != value.shape:
            raise UserError(f"--model {directory}: its weights do not fit the run's model "
                            f"({key} is {tuple(value.shape)}, the run needs "
                            f"{tuple(own[key].shape)}: an option or objective that changes the "
                            "model's shape)")
    model.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
    return model, fresh_parts(fresh + sorted(set(own) - set(state)))


def fresh_parts(keys: list[str]) -> list[str]:
    """The top-level modules of tensor names `keys` ("mlm.dense.weight" -> "mlm")."""
    return sorted({key.split(".")[0] for key in keys})


def tokenizer_files(directory: Path) -> Path | None:
    """Where the tokenizer of a model directory is (`DIR/tokenizer/` in a plmkit run, else DIR
    itself), None if it has none."""
    for where in (directory / "tokenizer", directory):
        if (where / "tokenizer.json").is_file() or (where / "vocab.txt").is_file():
            return where
    return None


def copy_tokenizer(source: Path, out: Path) -> None:
    """Copy a tokenizer directory's files as they are (a RoBERTa's keeps its <mask> and its
    tokenizer class)."""
    out.mkdir(parents=True, exist_ok=True)
    for name in TOKENIZER_FILES:
        if (source / name).is_file():
            shutil.copyfile(source / name, out / name)


def source_configs(directory: Path, generator: Path | None = None) -> dict[str, dict[str, Any]]:
    """The transformers config.json files a checkpoint was read from, by part ("" the main
    model); a plmkit run passes on what it was itself continued from."""
    if is_native(directory):
        path = directory / SOURCE_CONFIG
        return json.loads(path.read_text()) if path.is_file() else {}
    where = {"": directory, "generator": generator or directory / "generator"}
    return {part: json.loads((at / "config.json").read_text()) for part, at in where.items()
            if (at / "config.json").is_file()}


def export_hf(model_dir: Path, out: Path, sentence: EmbeddingSetup | None = None) -> None:
    """`plmkit export --format hf`: the model of `model_dir` (task heads included) as a
    transformers directory with its tokenizer and model card beside it, keeping the fields of
    the config.json it was continued from; `sentence`: also the sentence-transformers files
    that pool and normalise as it says."""
    from plmkit.interop.card import model_card
    from plmkit.tasks.embed import write_sentence_transformers

    model = load(model_dir)
    save_hf(model, out, source_configs(model_dir))
    tokenizer = tokenizer_files(model_dir)
    if tokenizer is not None:
        copy_tokenizer(tokenizer, out)
    (out / "README.md").write_text(model_card(model, model_dir), encoding="utf-8")
    if sentence is not None:
        hidden = model.config.hidden_size  # type: ignore[union-attr]
        write_sentence_transformers(out, sentence, hidden)
