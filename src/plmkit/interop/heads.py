"""Fine-tuned models out to their transformers task classes (`*ForSequenceClassification`,
`*ForTokenClassification`, `*ForQuestionAnswering`, `*ForMultipleChoice`).

The backbone goes out under the family's key map (its base-model tensors only: pretraining
heads stay behind); the task head's tensors are renamed to the class's own. A head whose
transformers class computes something else (ELECTRA's sequence classifier adds a dense + GELU
layer; mean pooling) is refused in one line rather than exported with other predictions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from plmkit.errors import UserError
from plmkit.interop.hf import config_to_hf, hf_names, hf_tensors, spec_of, write_hf_files
from plmkit.models.registry import HFSpec
from plmkit.nn.attention import unpruned_state_dict

# transformers' class-name prefix of each model_type
CLASS_PREFIX = {"bert": "Bert", "roberta": "Roberta", "albert": "Albert", "electra": "Electra",
                "ernie": "Ernie", "xlnet": "XLNet"}
# a sequence summary that is the first token's hidden state as it is (XLNet, ELECTRA)
FIRST_TOKEN = {"summary_type": "first", "summary_use_proj": False, "summary_activation": "linear",
               "summary_first_dropout": 0.0}


@dataclass(frozen=True)
class Layout:
    """How a task model maps onto a transformers class: the class name, whether its base model
    keeps the pooler, plmkit head prefix -> HF prefix, and the config fields it adds."""

    architecture: str
    pooler: bool
    head: dict[str, str]
    config: dict[str, Any] = field(default_factory=dict)


def save_task_hf(model: nn.Module, directory: Path, kept: Mapping[str, Any]) -> Path:
    """Write fine-tuned `model` as a directory that its transformers task class (and the
    matching `AutoModelFor*`) loads with the same logits. `kept`: fields of the config.json the
    backbone was continued from."""
    backbone: nn.Module = model.backbone  # type: ignore[assignment]
    spec = spec_of(backbone)
    layout = task_layout(model.task, spec, backbone)  # type: ignore[arg-type]
    state = unpruned_state_dict(backbone)
    base = {k: v for k, v in state.items() if _in_base(spec, k, layout.pooler)}
    tensors = hf_tensors(spec, base)
    for key, value in model.state_dict().items():
        prefix = next((p for p in layout.head if key.startswith(p)), None)
        if prefix is not None:
            tensors[layout.head[prefix] + key.removeprefix(prefix)] = _plain(value)
    config = {**kept, "model_type": spec.model_type, "architectures": [layout.architecture],
              **config_to_hf(spec, backbone.config), **spec.fixed,  # type: ignore[attr-defined]
              **layout.config}
    write_hf_files(directory, config, tensors)
    return directory


def _plain(value: Tensor) -> Tensor:
    return value.detach().contiguous().cpu()


def _in_base(spec: HFSpec, key: str, pooler: bool) -> bool:
    """Whether plmkit backbone tensor `key` belongs to the transformers base model."""
    if key.startswith("pooler.") and not pooler:
        return False
    try:
        return hf_names(spec, key)[0].startswith(spec.base_prefix)
    except KeyError:
        return False


def task_layout(task: Mapping[str, Any], spec: HFSpec, backbone: nn.Module) -> Layout:
    """The transformers layout of a fine-tuned model's `task` dict, or a UserError naming what
    transformers has no class for."""
    family = spec.model_type
    prefix = CLASS_PREFIX.get(family)
    name = task.get("name")
    if prefix is None:
        raise UserError(f"cannot export a fine-tuned {family} model: transformers has no task "
                        "classes for it in plmkit's key map")
    pooled = hasattr(backbone, "pooler")
    if name == "classify":
        return _classify(task, family, prefix, pooled)
    if name == "tag":
        return Layout(f"{prefix}ForTokenClassification", False, {"classifier.": "classifier."},
                      _labels(task["labels"]))
    if name == "squad":
        simple = "Simple" if family == "xlnet" else ""
        return Layout(f"{prefix}ForQuestionAnswering{simple}", False, {"qa.": "qa_outputs."})
    if name == "swag":
        if pooled:
            return Layout(f"{prefix}ForMultipleChoice", True, {"score.": "classifier."})
        out = "logits_proj." if family == "xlnet" else "classifier."
        return Layout(f"{prefix}ForMultipleChoice", False, {"score.": out}, _summary(backbone))
    raise UserError(f"cannot export a fine-tuned {name!r} model to transformers")


def _classify(task: Mapping[str, Any], family: str, prefix: str, pooled: bool) -> Layout:
    labels = task["labels"]
    extra = ({**_labels(labels), "problem_type": "single_label_classification"} if labels
             else {"num_labels": 1, "problem_type": "regression"})
    arch = f"{prefix}ForSequenceClassification"
    if task.get("pooling", "cls") != "cls":
        raise UserError(f"cannot export a classifier with --pooling {task['pooling']}: "
                        "transformers' classes pool the first token")
    if family == "roberta":  # its head is the pooler's dense + tanh, then the output layer
        return Layout(arch, False, {"backbone.pooler.dense.": "classifier.dense.",
                                    "classifier.": "classifier.out_proj."}, extra)
    if pooled:
        return Layout(arch, True, {"classifier.": "classifier."}, extra)
    if family == "xlnet":
        return Layout(arch, False, {"classifier.": "logits_proj."}, {**extra, **FIRST_TOKEN})
    raise UserError(f"cannot export a {family} sequence classifier: transformers' "
                    f"{arch} adds a dense + GELU layer that plmkit's head has not")


def _labels(labels: list[str]) -> dict[str, Any]:
    return {"num_labels": len(labels), "id2label": dict(enumerate(labels)),
            "label2id": {label: i for i, label in enumerate(labels)}}


def _summary(backbone: nn.Module) -> dict[str, Any]:
    """XLNet's / ELECTRA's sequence summary as the first token's state, then dropout."""
    return {**FIRST_TOKEN, "summary_last_dropout": backbone.config.dropout}  # type: ignore[attr-defined]
