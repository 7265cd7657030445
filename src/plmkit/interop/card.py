"""The model card (`README.md`) of a transformers export: Hub metadata, how the model was made
(the pretraining command from `run.json`, the fine-tuning options from `finetune.json`), its
metrics (`eval_results.json`), the plmkit version, and how to load it."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

from torch import nn

# plmkit task -> the transformers pipeline that runs the export (multiple choice has none)
PIPELINE_TAGS = {"classify": "text-classification", "tag": "token-classification",
                 "squad": "question-answering", "swag": "multiple-choice", None: "fill-mask"}
AUTO_CLASSES = {"classify": "AutoModelForSequenceClassification",
                "tag": "AutoModelForTokenClassification",
                "squad": "AutoModelForQuestionAnswering", "swag": "AutoModelForMultipleChoice",
                None: "AutoModelForMaskedLM"}


def model_card(model: nn.Module, model_dir: Path) -> str:
    """The README.md text for the export of `model`, read from `model_dir`."""
    import plmkit

    task = (getattr(model, "task", None) or {}).get("name")
    family = model.config.family  # type: ignore[attr-defined]
    params = sum(p.numel() for p in model.parameters())
    lines = ["---", "library_name: transformers", f"pipeline_tag: {PIPELINE_TAGS[task]}",
             f"tags: [plmkit, {family}]", "---", "",
             f"# {model_dir.resolve().name}", "",
             f"A {family} model ({params / 1e6:.1f}M parameters) "
             + (f"fine-tuned for `{task}`" if task else "pretrained")
             + f" with plmkit {plmkit.__version__}, exported by "
             f"`plmkit export --format hf --model {shlex.quote(str(model_dir))}`.", ""]
    lines += _made(model_dir) + _results(model_dir) + _use(task)
    return "\n".join(lines) + "\n"


def _made(model_dir: Path) -> list[str]:
    """How the model was made: its pretraining command, its fine-tuning options."""
    out = []
    run = _json(model_dir / "run.json")
    if run:
        out += ["## Pretraining", "", "```", _pretrain_command(run["args"]), "```", "",
                f"Corpus: {json.dumps(run.get('corpus'), default=str)}", ""]
    options = _json(model_dir / "finetune.json")
    if options:
        out += ["## Fine-tuning", "", "Options (`plmkit finetune`): "
                + ", ".join(f"{k}={v}" for k, v in options.items()), ""]
    return out


def _pretrain_command(args: dict[str, Any]) -> str:
    words = ["plmkit", "pretrain"]
    for name in ("model", "objective", "corpus", "out", "steps", "batch_size", "seq_len", "lr",
                 "seed"):
        value = args.get(name)
        if value is None:
            continue
        values = value if isinstance(value, list) else [value]
        words += [f"--{name.replace('_', '-')}", *(str(v) for v in values)]
    return shlex.join(words)


def _results(model_dir: Path) -> list[str]:
    results = _json(model_dir / "eval_results.json")
    if not results:
        return []
    where = results.pop("eval_file", None)
    step = results.pop("step", None)
    head = f"On `{where}` at step {step}" if where else "Evaluation"
    rows = [f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |"
            for k, v in results.items()]
    return ["## Results", "", f"{head}:", "", "| metric | value |", "|---|---|", *rows, ""]


def _use(task: str | None) -> list[str]:
    """How to load the export (transformers 5 has no question-answering or multiple-choice
    pipeline: the Auto class)."""
    direct = task in ("squad", "swag")
    load = (f'model = {AUTO_CLASSES[task]}.from_pretrained("PATH")' if direct
            else f'pipe = pipeline("{PIPELINE_TAGS[task]}", model="PATH")')
    name = AUTO_CLASSES[task] if direct else "pipeline"
    return ["## Use", "", "```python", f"from transformers import {name}", load, "```"]


def _json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None
