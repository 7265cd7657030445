"""What runs a model for `plmkit serve`, `predict` and `embed` (`--backend`, `--int8`): torch
(plmkit's own model, int8 through `plmkit.deploy.inference.optimize`) or onnxruntime on an exported
directory (`OnnxModule`, its int8 graph with `--int8`). Either way the result is called as a
plmkit model is, so tokenisation, batching, pooling, task decoding and the HTTP routes are the
same code for both."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from plmkit.errors import UserError
from plmkit.interop.native import Finetuned, saved_options, tokenizer_dir
from plmkit.tasks.base import resolve_options, task_of_model
from plmkit.tasks.embed import EmbeddingSetup, embed, embedding_setup
from plmkit.tasks.files import field, read_records
from plmkit.tokenizers import Tokenizer

BACKENDS = ("torch", "onnx")


@dataclass
class Loaded:
    """A model directory ready to run: the model (called as plmkit models are), its tokenizer
    and embedding setup, and which backend runs it."""

    model: nn.Module
    tokenizer: Tokenizer
    embedding: EmbeddingSetup
    backend: str
    int8: bool


def load(model_dir: Path, backend: str = "torch", int8: bool = False) -> Loaded:
    """`model_dir` on `backend`: "torch" a plmkit or transformers directory (with `int8`, its
    Linear layers quantised, not compiled: a server sees a new shape at every request),
    "onnx" a directory of `plmkit export --format onnx` (with `int8`, its model.int8.onnx),
    run with torch's thread count."""
    model_dir = Path(model_dir)
    if backend == "onnx":
        from plmkit.deploy.onnx import OnnxModule

        module = OnnxModule(model_dir, int8=int8, threads=torch.get_num_threads())
        setup = EmbeddingSetup(**module.onnx.info["embedding"])
        model: nn.Module = module
    elif backend == "torch":
        import plmkit
        from plmkit.deploy.inference import optimize
        from plmkit.deploy.onnx import INFO

        if (model_dir / INFO).is_file():
            raise UserError(f"--model {model_dir}: an ONNX export; run it with --backend onnx")
        model = plmkit.load(model_dir).eval()
        if int8:
            model = optimize(model, int8=True, compile=False)
        setup = embedding_setup(model_dir)
    else:
        raise UserError(f"--backend {backend}: choose {' or '.join(BACKENDS)}")
    positions = getattr(model.config, "max_positions", None) or setup.max_seq_len
    return Loaded(model, Tokenizer.load(tokenizer_dir(model_dir)),
                  setup.given(max_seq_len=min(setup.max_seq_len, positions)), backend, int8)


def finetuned(loaded: Loaded, model_dir: Path, given: Mapping[str, Any] | None = None
              ) -> Finetuned:
    """A fine-tuned model's task and saved options around `loaded` (`plmkit predict`); `given`:
    options that replace the saved ones (`FinetuneOptions.given`)."""
    task = task_of_model(loaded.model, model_dir)
    options = resolve_options(task, saved_options(model_dir).given(given))
    return Finetuned(loaded.model, task, loaded.tokenizer, options)


def predict_file(model_dir: Path, input: Path, output: Path,
                 given: Mapping[str, Any] | None = None, backend: str = "torch",
                 int8: bool = False) -> int:
    """`plmkit predict`: one JSON line of predictions per record of `input`; how many. `given`:
    options that replace the fine-tuning ones (batch size, the columns of `input`)."""
    f = finetuned(load(model_dir, backend, int8), model_dir, given)
    records = f.task.predict(f.model, f.tokenizer, input, f.options)
    with open(output, "w", encoding="utf-8") as out:
        for record in records:
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
    return len(records)


def embed_texts(model_dir: Path, texts: Sequence[str], pooling: str | None = None,
                normalize: bool | None = None, max_seq_len: int | None = None,
                batch_size: int = 32, backend: str = "torch", int8: bool = False
                ) -> np.ndarray:
    """`plmkit embed`: (N, H) vectors by the directory's embedding setup unless `pooling`,
    `normalize` or `max_seq_len` say otherwise."""
    loaded = load(model_dir, backend, int8)
    setup = loaded.embedding.given(pooling, normalize, max_seq_len)
    return embed(loaded.model, loaded.tokenizer, texts, setup, batch_size)


def read_texts(path: Path, text_field: str = "text") -> list[str]:
    """`plmkit embed`'s input: text lines, or the `text_field` of csv / tsv / jsonl / table
    records."""
    records = read_records(path, text_lines=True, text_field=text_field)
    return [str(field(path, r, "text")) for r in records]


EMBEDDING_FORMATS = (".npy", ".jsonl")  # what `plmkit embed --output` writes


def write_embeddings(path: Path, texts: Sequence[str], vectors: np.ndarray) -> None:
    """`vectors` (N, H) as .jsonl (one {text, embedding} a line) if `path` ends so, else .npy."""
    if path.suffix == ".jsonl":
        with open(path, "w", encoding="utf-8") as f:
            for text, vector in zip(texts, vectors.tolist(), strict=True):
                f.write(json.dumps({"text": text, "embedding": vector}, ensure_ascii=False) + "\n")
    else:
        with open(path, "wb") as f:
            np.save(f, vectors)


def describe(loaded: Loaded) -> dict[str, Any]:
    """The model as `/health` reports it."""
    config, task = loaded.model.config, getattr(loaded.model, "task", None)
    return {"family": config.family, "layers": config.num_layers,
            "hidden_size": config.hidden_size, "task": (task or {}).get("name"),
            "backend": loaded.backend, "int8": loaded.int8}
