"""What a model file declares about its family, and the table of families."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from torch import nn

from plmkit.errors import UserError

KeyMap = dict[str, "str | tuple[str, ...]"]
# plmkit's activation names -> transformers' (`hidden_act`, XLNet's `ff_activation`)
HF_ACTIVATIONS = {"gelu": "gelu", "gelu_tanh": "gelu_new", "relu": "relu"}


@dataclass(frozen=True, eq=False)  # hashed by identity: one spec per family
class HFSpec:
    """How a family maps onto its Hugging Face `transformers` counterpart.

    `keys` maps a plmkit parameter name to the HF name(s) in the `*ForPreTraining` layout; a
    tuple means the plmkit tensor is the HF tensors concatenated on dim 0 (a fused QKV).
    `{i}` stands for a layer index. `config` maps plmkit config fields to HF config fields.
    """

    model_type: str
    architecture: str
    base_prefix: str
    keys: KeyMap
    config: dict[str, str]
    aliases: dict[str, str] = field(default_factory=dict)  # HF name -> older HF name
    ignored: tuple[str, ...] = ()  # HF names with nothing to load (tied copies, buffers)
    # field -> {ours: HF}; the activation's names unless given
    value_maps: dict[str, dict[Any, Any]] = field(
        default_factory=lambda: {"activation": HF_ACTIVATIONS})
    fixed: dict[str, Any] = field(default_factory=dict)  # HF fields we write and require
    # plmkit parameter prefixes the HF class has no place for, left out of an export
    # (RoBERTa's optional sentence head: RobertaForMaskedLM has none)
    unexported: tuple[str, ...] = ()
    # further HF models inside the same plmkit model, each in a subdirectory (ELECTRA's
    # generator); `keys` of each spec name the plmkit parameters it owns
    parts: dict[str, HFSpec] = field(default_factory=dict)


def encoder_spec(model_type: str, architecture: str, base: str, keys: KeyMap,
                 config: dict[str, str], *, mlm: str | None = None, ignored: tuple[str, ...] = (),
                 fixed: dict[str, Any] | None = None, **more: Any) -> HFSpec:
    """The spec of a transformers BERT-layout model (BERT, RoBERTa, ALBERT, ERNIE, ELECTRA):
    absolute positions, the position / token-type id buffers left unread and, with `mlm` (the
    MLM head's HF prefix), its decoder tied to the token embedding (nothing to read), whose
    bias older checkpoints name `decoder.bias`."""
    tied = () if mlm is None else (mlm + "decoder.weight", mlm + "decoder.bias")
    return HFSpec(
        model_type, architecture, base, keys, config,
        aliases={} if mlm is None else {mlm + "bias": mlm + "decoder.bias"},
        ignored=(*tied, base + "embeddings.position_ids", base + "embeddings.token_type_ids",
                 *ignored),
        fixed={"position_embedding_type": "absolute", **(fixed or {})}, **more)


@dataclass(frozen=True)
class Family:
    """A model family: its config class, model class, presets and HF mapping."""

    name: str
    config: type
    model: Callable[[Any], nn.Module]
    presets: dict[str, dict[str, Any]]
    default_objective: str
    tokenizer: str = "wordpiece"  # the kind trained for it when none is given
    data_defaults: dict[str, Any] = field(default_factory=dict)  # DataOptions fields
    optim_defaults: dict[str, Any] = field(default_factory=dict)  # TrainConfig betas, eps, ...
    # the learning rate over the steps: BERT's linear warmup and decay, or the Transformer's
    # inverse square root of the step (`plmkit.training.optim`)
    schedule: Literal["linear", "inverse_sqrt"] = "linear"
    clip_norm: float | None = 1.0  # gradient clipping by global norm (None: none)
    hf: HFSpec | None = None


FAMILIES: dict[str, Family] = {}


def size(layers: int, hidden: int, heads: int | None = None, **more: Any) -> dict[str, Any]:
    """A preset's shape: `layers` blocks of width `hidden` with `heads` heads (one per 64
    dimensions unless given) and feed-forward layers 4x as wide (the Transformer's and
    BERT's ratio), and `more` config fields."""
    return {"num_layers": layers, "hidden_size": hidden, "num_heads": heads or hidden // 64,
            "intermediate_size": 4 * hidden, **more}


def register(family: Family) -> Family:
    """Add `family` to the table (each model file calls this once)."""
    FAMILIES[family.name] = family
    return family


def get_family(name: str) -> Family:
    """The family called `name`, or a UserError listing the known ones."""
    if name not in FAMILIES:
        raise UserError(f"unknown model family {name!r}; known: {', '.join(sorted(FAMILIES))}")
    return FAMILIES[name]


def all_presets() -> dict[str, tuple[Family, dict[str, Any]]]:
    """Every preset name with its family and config overrides."""
    return {p: (f, kw) for f in FAMILIES.values() for p, kw in f.presets.items()}


def preset_config(name: str, **overrides: Any) -> Any:
    """The config of preset `name` (e.g. "bert-base"), with `overrides` applied."""
    presets = all_presets()
    if name not in presets:
        near = difflib.get_close_matches(name, presets, n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(near)}?" if near else f"; known: {', '.join(presets)}"
        raise UserError(f"unknown preset {name!r}{hint}")
    family, kwargs = presets[name]
    return family.config(**{**kwargs, **overrides})


def build(config: Any) -> nn.Module:
    """A freshly initialised model for `config` (its family read from `config.family`)."""
    return get_family(config.family).model(config)
