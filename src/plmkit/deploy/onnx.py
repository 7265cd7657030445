"""ONNX export (`plmkit export --format onnx`) and the onnxruntime side of an exported directory.

An exported directory holds `model.onnx` (float32; `model.int8.onnx` too with `--int8`, weights
quantised to int8 by onnxruntime's dynamic quantisation, activations quantised per call), the
model's tokenizer files as they were, a fine-tuned model's `finetune.json` (its max_seq_len),
and `plmkit-onnx.json`: family, task, labels, the
embedding setup, the graph's inputs and outputs with their axes, and the parity measured.

The graph takes int64 `input_ids`, `attention_mask` and `token_type_ids`, each (batch,
sequence) with both axes dynamic, and returns `last_hidden_state`,
`pooler_output` (backbones that have one), `logits` (classify: (batch, labels), tag: (batch,
sequence, labels)) or `start_logits` / `end_logits` (squad); a SWAG model takes (batch,
choices, sequence) and returns `logits` (batch, choices). It is exported with the dynamo
exporter (`torch.export`), under which the encoders keep the padded layout and mask attention
(`nn.masks.encoder_mask`) instead of removing padding, so one graph serves every batch. At
padded positions a per-token output is undefined (plmkit's eager encoders write zeros there);
everything at real tokens is checked.

Parity is checked before anything is written: plmkit's outputs against onnxruntime's on a few
batches of real text of different lengths, padded, singles and pairs; a float32 graph further
than `TOLERANCE` from plmkit is refused.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from plmkit.errors import UserError

if TYPE_CHECKING:
    from plmkit.tasks.embed import EmbeddingSetup

INFO = "plmkit-onnx.json"
MODEL = "model.onnx"
MODEL_INT8 = "model.int8.onnx"
TOLERANCE = 1e-4  # float32 max abs difference allowed at export
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
FAMILIES = ("bert", "roberta", "albert", "electra", "ernie")
# Why a family is not exported (checked with torch 2.13 and onnxscript 0.7).
NOT_EXPORTED = {
    "xlnet": "torch 2.13's ONNX exporter fails to decompose its relative attention (a view of "
             "a transposed tensor in nn/rel_attention.py)",
}
TASKS = ("classify", "tag", "squad", "swag")
# Opsets that export and run (torch 2.13, onnxruntime 1.32): below 18 the version converter
# writes invalid graphs (Split's num_outputs); from 23 SDPA becomes ONNX Attention, whose
# onnxruntime kernel rejects a key-padding mask that broadcasts over the queries.
OPSETS = range(18, 23)
EXTERNAL_DATA_BYTES = 1 << 30  # above this, weights go to a .data file (protobuf's 2 GB cap)

# Real text of different lengths (English, Chinese, a question with its passage) for the check.
PARITY_TEXTS = (
    "Thanks!",
    "The quick brown fox jumps over the lazy dog near the riverbank.",
    "北京是中华人民共和国的首都，也是全国的政治和文化中心。",
    "In the beginning God created the heaven and the earth. And the earth was without form, "
    "and void; and darkness was upon the face of the deep. And the Spirit of God moved upon "
    "the face of the waters. And God said, Let there be light: and there was light. And God "
    "saw the light, that it was good: and God divided the light from the darkness.",
)
PARITY_PAIRS = (
    ("Who divided the light from the darkness?",
     "And God saw the light, that it was good: and God divided the light from the darkness."),
    ("What does the fox jump over?", "The quick brown fox jumps over the lazy dog."),
)
# Contexts and endings for multiple-choice (SWAG) models.
PARITY_CHOICES = (
    ("The quick brown fox", ("jumps over the lazy dog.", "reads the newspaper.",
                             "sleeps all day under a tree near the riverbank.")),
    ("And God said, Let there be light:", ("and there was light.", "Thanks!",
                                           "and darkness was upon the face of the deep.")),
)
PARITY_MAX_LEN = 128


def require() -> tuple[Any, Any]:
    """The `onnx` and `onnxruntime` modules, or a UserError naming the extra to install."""
    try:
        import onnx
        import onnxruntime
    except ImportError as e:
        raise UserError(f"ONNX needs the deploy extra ({e.name} is missing): "
                        "pip install plmkit[deploy]") from None
    return onnx, onnxruntime


def named_outputs(out: Any, task: str | None) -> dict[str, Tensor]:
    """The tensors of a plmkit model output under their graph names (see the module doc)."""
    named = {"last_hidden_state": out.last_hidden_state}  # (B, S, H)
    pooled = getattr(out, "pooler_output", None)
    if pooled is not None:
        named["pooler_output"] = pooled  # (B, H)
    if task == "squad":
        named["start_logits"], named["end_logits"] = out.logits.unbind(-1)  # (B, S) each
    elif task is not None:
        named["logits"] = out.logits  # (B, C) or (B, S, C)
    return named


class Graph(nn.Module):
    """A plmkit model as the exported graph sees it: int64 inputs in, a tuple of tensors out."""

    def __init__(self, model: nn.Module, outputs: Sequence[str]):
        super().__init__()
        self.model = model
        self.outputs = tuple(outputs)
        self.task = (getattr(model, "task", None) or {}).get("name")

    def forward(self, input_ids: Tensor, attention_mask: Tensor,
                token_type_ids: Tensor) -> tuple[Tensor, ...]:
        """Each input (B, S), or (B, C, S) for swag -> `self.outputs` in order."""
        out = self.model(input_ids, attention_mask, token_type_ids)
        named = named_outputs(out, self.task)
        return tuple(named[n] for n in self.outputs)


# ---------------------------------------------------------------------------------------------
# Export


@dataclass
class Gap:
    """How far onnxruntime's outputs are from plmkit's on the parity batches."""

    max_abs: float  # over every output; per-token outputs at real tokens only
    cosine: float  # the lowest cosine similarity of a token's two hidden-state vectors
    same_argmax: tuple[int, int] | None  # logits whose argmax agrees, logits compared

    def as_dict(self) -> dict[str, Any]:
        return {"max_abs_diff": self.max_abs, "min_cosine": self.cosine,
                "same_argmax": list(self.same_argmax) if self.same_argmax else None}


@dataclass
class Parity:
    """What the export-time check measured, float32 and (with --int8) int8."""

    sequences: int
    batches: int
    lengths: tuple[int, int]  # shortest and longest input, in tokens
    fp32: Gap
    int8: Gap | None = None

    def line(self) -> str:
        """The one-line report of `plmkit export --format onnx`."""
        text = (f"parity on {self.sequences} real-text inputs in {self.batches} padded batches "
                f"({self.lengths[0]}-{self.lengths[1]} tokens): float32 max abs diff "
                f"{self.fp32.max_abs:.1e} (limit {TOLERANCE:.0e})")
        if self.int8 is not None:
            text += (f"; int8 max abs diff {self.int8.max_abs:.2g}, hidden-state cosine >= "
                     f"{self.int8.cosine:.4f}")
            if self.int8.same_argmax is not None:
                text += ", same argmax on {}/{}".format(*self.int8.same_argmax)
        return text

    def as_dict(self) -> dict[str, Any]:
        return {"inputs": self.sequences, "batches": self.batches, "tokens": list(self.lengths),
                "tolerance": TOLERANCE, "fp32": self.fp32.as_dict(),
                "int8": self.int8.as_dict() if self.int8 else None}


def export_onnx(model_dir: Path, out: Path, *, int8: bool = False,
                opset: int | None = None) -> Parity:
    """Export the model of `model_dir` into the directory `out` (created; `plmkit export`
    passes a staged one), check it and write its description; a UserError when the float32
    parity check fails."""
    import plmkit
    from plmkit.interop.native import FINETUNE_CONFIG
    from plmkit.interop.start import copy_tokenizer, tokenizer_files
    from plmkit.tasks.embed import embedding_setup
    from plmkit.tokenizers import Tokenizer

    require()
    if opset is not None and opset not in OPSETS:
        raise UserError(f"--opset {opset}: plmkit exports opsets {OPSETS.start} to "
                        f"{OPSETS.stop - 1} (older ones convert to invalid graphs; from 23, "
                        "onnxruntime's Attention rejects the padding mask)")
    model = plmkit.load(model_dir).eval()
    task = check_exportable(model, model_dir)
    source = tokenizer_files(model_dir)
    if source is None:
        raise UserError(f"--model {model_dir}: no tokenizer (tokenizer.json or vocab.txt) to "
                        "check the export on and to ship beside it")
    batches = parity_batches(Tokenizer.load(source), model)
    with torch.no_grad():
        outputs = list(named_outputs(model(**batches[0]), task))
    graph = Graph(model, outputs).eval()
    large = sum(p.numel() * p.element_size() for p in model.parameters()) > EXTERNAL_DATA_BYTES
    out.mkdir(parents=True, exist_ok=True)
    trace(graph, batches[0], out / MODEL, opset, large)
    fp32 = measure(out / MODEL, graph, batches)
    if not fp32.max_abs <= TOLERANCE:  # NaN fails too
        raise UserError(f"--model {model_dir}: the ONNX graph differs from plmkit by "
                        f"{fp32.max_abs:.2g} (limit {TOLERANCE:.0e}); nothing written")
    lengths = [int(n) for b in batches for n in b["attention_mask"].sum(-1).flatten()]
    parity = Parity(len(lengths), len(batches), (min(lengths), max(lengths)), fp32)
    if int8:
        quantize(out / MODEL, out / MODEL_INT8, large)
        parity.int8 = measure(out / MODEL_INT8, graph, batches)
    copy_tokenizer(source, out)
    if (model_dir / FINETUNE_CONFIG).is_file():  # the task's max_seq_len and batch size
        shutil.copyfile(model_dir / FINETUNE_CONFIG, out / FINETUNE_CONFIG)
    info = describe(model, out, int8, parity, embedding_setup(model_dir))
    (out / INFO).write_text(json.dumps(info, indent=2, ensure_ascii=False) + "\n")
    return parity


def check_exportable(model: nn.Module, model_dir: Path) -> str | None:
    """The task name of `model` (None for a backbone); a UserError for what is not exported."""
    family = model.config.family  # type: ignore[union-attr]
    if family not in FAMILIES:
        why = NOT_EXPORTED.get(family, f"ONNX export covers the encoders ({', '.join(FAMILIES)})")
        raise UserError(f"--model {model_dir}: cannot export {family} to ONNX: {why}; "
                        "use --format hf")
    task = (getattr(model, "task", None) or {}).get("name")
    if task is not None and task not in TASKS:
        raise UserError(f"--model {model_dir}: ONNX export covers the {', '.join(TASKS)} "
                        f"heads, not {task}")
    return task


def parity_batches(tokenizer: Any, model: nn.Module) -> list[dict[str, Tensor]]:
    """Padded batches of `PARITY_TEXTS` (two to trace with, then all), the pairs, and one text
    alone (nothing padded), as the model's keyword inputs; for swag, (questions, choices,
    sequence) batches of `PARITY_CHOICES`. At most 128 tokens, 2 fewer than the model's
    positions (RoBERTa's start past the padding index)."""
    positions = getattr(model.config, "max_positions", None)  # XLNet: none (relative)
    length = PARITY_MAX_LEN if positions is None else min(PARITY_MAX_LEN, positions - 2)
    texts = list(PARITY_TEXTS)
    if (getattr(model, "task", None) or {}).get("name") == "swag":
        batches = [choice_batch(tokenizer, PARITY_CHOICES, c, length) for c in (3, 2)]
        batches.append(choice_batch(tokenizer, PARITY_CHOICES[:1], 3, length))
    else:
        batches = [tokenizer(texts[1:3], max_length=length), tokenizer(texts, max_length=length),
                   tokenizer([q for q, _ in PARITY_PAIRS], [c for _, c in PARITY_PAIRS],
                             max_length=length),
                   tokenizer(texts[3:], max_length=length)]
    if model.config.type_vocab_size < 2:  # type: ignore[union-attr]  # RoBERTa: one segment
        for batch in batches:
            batch["token_type_ids"].zero_()
    return batches


def choice_batch(tokenizer: Any, questions: Sequence[tuple[str, Sequence[str]]],
                 choices: int, length: int) -> dict[str, Tensor]:
    """(B, C, S) inputs: each context paired with its first `choices` endings, padded."""
    pairs = [(context, e) for context, endings in questions for e in endings[:choices]]
    batch = tokenizer([c for c, _ in pairs], [e for _, e in pairs], max_length=length)
    return {k: v.view(len(questions), choices, -1) for k, v in batch.items()}


def trace(graph: Graph, example: dict[str, Tensor], path: Path, opset: int | None,
          large: bool) -> None:
    """`torch.onnx.export` with the dynamo exporter, every axis dynamic: batch, sequence, and
    choices for swag's (batch, choices, sequence) inputs."""
    names = ("batch", "choices", "sequence") if example["input_ids"].dim() == 3 else (
        "batch", "sequence")
    axes = {i: torch.export.Dim(name) for i, name in enumerate(names)}
    args = tuple(example[k] for k in INPUTS)
    with quiet():
        torch.onnx.export(
            graph, args, str(path), input_names=list(INPUTS), output_names=list(graph.outputs),
            opset_version=opset, dynamo=True, external_data=large, verbose=False,
            dynamic_shapes={k: axes for k in INPUTS},
        )


@contextlib.contextmanager
def quiet(logger: str = "torch.onnx") -> Iterator[None]:
    """Silence the warnings and the log lines below errors of `logger` (the exporter's and
    the quantiser's name their internals, not the user's model)."""
    log = logging.getLogger(logger)
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        log.setLevel(level)


def quantize(source: Path, target: Path, large: bool) -> None:
    """Dynamic int8 quantisation (onnxruntime.quantization.quantize_dynamic): weights of
    MatMul / Gather stored as int8 with a scale per output channel, activations quantised at
    run time. Per channel, not per tensor: on all-MiniLM-L6-v2 and 69 real texts the mean
    cosine of int8 to float32 sentence vectors rose from 0.946 to 0.990 (lowest 0.77 -> 0.96)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with quiet(logger=""):  # onnxruntime.quantization logs to the root logger
        quantize_dynamic(source, target, weight_type=QuantType.QInt8, per_channel=True,
                         use_external_data_format=large)


def measure(path: Path, graph: Graph, batches: Sequence[dict[str, Tensor]]) -> Gap:
    """How far the graph at `path` (onnxruntime) is from `graph` (plmkit) on `batches`."""
    session = open_session(path, threads=torch.get_num_threads())
    feeds = [i.name for i in session.get_inputs()]  # the exporter drops an unused input
    worst, cosine, same, total = 0.0, 1.0, 0, 0
    for batch in batches:
        mask = batch["attention_mask"].bool()  # (B, S)
        with torch.no_grad():
            ours = graph(*(batch[k] for k in INPUTS))
        theirs = session.run(list(graph.outputs), {k: batch[k].numpy() for k in feeds})
        for name, a, b in zip(graph.outputs, ours, theirs, strict=True):
            a, b = a.float(), torch.from_numpy(b)
            if per_token(name, graph.task):
                a, b = a[mask], b[mask]  # (N, ...): real tokens only
            worst = max(worst, float((a - b).abs().max()))
            if name == "last_hidden_state":  # (N, H)
                cosine = min(cosine, float(F.cosine_similarity(a, b, dim=-1).min()))
            if name.endswith("logits"):
                agree = a.argmax(-1) == b.argmax(-1)
                same, total = same + int(agree.sum()), total + agree.numel()
    return Gap(worst, cosine, (same, total) if total else None)


def per_token(output: str, task: str | None) -> bool:
    """Whether a graph output has a sequence axis (then undefined at padded positions)."""
    return output in ("last_hidden_state", "start_logits", "end_logits") or (
        output == "logits" and task == "tag")


def describe(model: nn.Module, out: Path, int8: bool, parity: Parity,
             embedding: EmbeddingSetup) -> dict[str, Any]:
    """The contents of `plmkit-onnx.json`."""
    onnx, _ = require()
    proto = onnx.load(str(out / MODEL), load_external_data=False)
    config = model.config  # type: ignore[union-attr]
    task = getattr(model, "task", None)
    return {
        "format": "onnx",
        "model": MODEL,
        "int8_model": MODEL_INT8 if int8 else None,
        "opset": next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")),
        "family": config.family,
        "task": task,
        "labels": (task or {}).get("labels"),
        "hidden_size": config.hidden_size,
        "num_layers": config.num_layers,
        "max_positions": getattr(config, "max_positions", None),
        "pad_token_id": config.pad_token_id,
        "embedding": {"pooling": embedding.pooling, "normalize": embedding.normalize,
                      "max_seq_len": embedding.max_seq_len},
        "inputs": [signature(v) for v in proto.graph.input],
        "outputs": [signature(v) for v in proto.graph.output],
        "parity": parity.as_dict(),
    }


def signature(value: Any) -> dict[str, Any]:
    """An ONNX graph input or output as {"name", "dtype", "shape"} (axis names or sizes)."""
    import onnx

    tensor = value.type.tensor_type
    shape = [d.dim_param or d.dim_value for d in tensor.shape.dim]
    return {"name": value.name, "dtype": onnx.helper.tensor_dtype_to_np_dtype(
        tensor.elem_type).name, "shape": shape}


# ---------------------------------------------------------------------------------------------
# Runtime


def open_session(path: Path, threads: int | None = None) -> Any:
    """An onnxruntime CPU session on `path`, all graph optimisations on, `threads` intra-op
    threads (None: onnxruntime's default, one per core)."""
    _, ort = require()
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads is not None:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


@dataclass
class OnnxOutput:
    """What `OnnxModel` returns, as plmkit's models do (numpy arrays): `logits` is (B, C) for
    classify, (B, S, C) for tag, (B, S, 2) for squad (start, end), (B, C) for swag (one score
    a choice; inputs and hidden states have the choices axis), None for a backbone."""

    last_hidden_state: np.ndarray  # (B, S, H); swag (B, C, S, H)
    pooler_output: np.ndarray | None = None  # (B, H)
    logits: np.ndarray | None = None


class OnnxModel:
    """An exported directory in onnxruntime (`plmkit export --format onnx`):

        model = OnnxModel("onnx-bert/")
        batch = model.tokenizer(["a text", "another"])
        out = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    """

    def __init__(self, directory: str | Path, *, int8: bool = False,
                 threads: int | None = None):
        self.directory = Path(directory)
        self.info = read_info(self.directory)
        name = self.info["int8_model"] if int8 else self.info["model"]
        if not name:
            raise UserError(f"{self.directory}: no int8 model (export it with --int8)")
        self.session = open_session(self.directory / name, threads)
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.outputs = [o.name for o in self.session.get_outputs()]

    @property
    def task(self) -> dict[str, Any] | None:
        return self.info["task"]

    @property
    def labels(self) -> list[str] | None:
        return self.info["labels"]

    @property
    def tokenizer(self) -> Any:
        from plmkit.tokenizers import Tokenizer

        return Tokenizer.load(self.directory)

    def run(self, input_ids: Any, attention_mask: Any = None,
            token_type_ids: Any = None) -> dict[str, np.ndarray]:
        """The graph's outputs by name; inputs (B, S) as numpy arrays, torch tensors or lists
        (no mask: every token real; no segments: all 0)."""
        ids = np.asarray(input_ids, dtype=np.int64)
        given = {"input_ids": ids, "attention_mask": attention_mask,
                 "token_type_ids": token_type_ids}
        defaults = {"attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
        feed = {k: defaults[k] if given[k] is None else np.asarray(given[k], dtype=np.int64)
                for k in self.inputs}
        return dict(zip(self.outputs, self.session.run(self.outputs, feed), strict=True))

    def __call__(self, input_ids: Any, attention_mask: Any = None,
                 token_type_ids: Any = None) -> OnnxOutput:
        out = self.run(input_ids, attention_mask, token_type_ids)
        logits = out.get("logits")
        if "start_logits" in out:
            logits = np.stack([out["start_logits"], out["end_logits"]], -1)  # (B, S, 2)
        return OnnxOutput(out["last_hidden_state"], out.get("pooler_output"), logits)


def read_info(directory: Path) -> dict[str, Any]:
    """`plmkit-onnx.json` of an exported directory."""
    path = directory / INFO
    if not path.is_file():
        raise UserError(f"{directory}: not an ONNX export of plmkit (no {INFO})")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise UserError(f"{path}:{e.lineno}: invalid JSON ({e.msg})") from None


@dataclass(frozen=True)
class OnnxConfig:
    """What plmkit's serving and task code read of a model's config, from `plmkit-onnx.json`."""

    family: str
    hidden_size: int
    num_layers: int | None  # None: an export written before plmkit recorded it
    max_positions: int | None
    pad_token_id: int


@dataclass
class TorchOutput:
    """`OnnxOutput` as torch tensors (what a plmkit model returns)."""

    last_hidden_state: Tensor
    pooler_output: Tensor | None = None
    logits: Tensor | None = None


class OnnxModule(nn.Module):
    """An exported directory behind plmkit's model interface, so that the task, embedding and
    serving code runs it as it runs a torch model: `.config`, `.task`, and `forward(input_ids,
    attention_mask=None, token_type_ids=None)` -> `.last_hidden_state`, `.pooler_output`,
    `.logits` as CPU tensors. It has no parameters and no masked-LM head; per-token outputs
    at padded positions are undefined (plmkit's eager models write zeros)."""

    def __init__(self, directory: str | Path, *, int8: bool = False,
                 threads: int | None = None):
        super().__init__()
        self.onnx = OnnxModel(directory, int8=int8, threads=threads)
        info = self.onnx.info
        self.config = OnnxConfig(info["family"], info["hidden_size"], info.get("num_layers"),
                                 info["max_positions"], info["pad_token_id"])
        self.task = info["task"]
        self.eval()

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                token_type_ids: Tensor | None = None) -> TorchOutput:
        """Inputs (B, S) -> hidden states (B, S, H), pooler (B, H), logits as `OnnxOutput`."""
        out = self.onnx(*(None if t is None else t.cpu().numpy()
                          for t in (input_ids, attention_mask, token_type_ids)))
        return TorchOutput(*(None if a is None else torch.from_numpy(a)
                             for a in (out.last_hidden_state, out.pooler_output, out.logits)))
