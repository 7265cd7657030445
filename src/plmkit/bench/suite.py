"""`plmkit bench`: plmkit against `transformers` on the same machine, in one process,
interleaved (A B A B ...), reporting medians and the ratio (DESIGN.md, "How performance is
measured")."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from plmkit.errors import UserError
from plmkit.interop import save_hf
from plmkit.interop.marian import to_marian
from plmkit.models import build, get_family, preset_config
from plmkit.objectives import get_objective
from plmkit.objectives.plm import K, permutation_masks, target_mapping
from plmkit.objectives.seq2seq import LABEL_SMOOTHING
from plmkit.training.precision import BF16_FLAGS, cpu_bf16_speedup, cpu_flags, fast_bf16

MASK_FRACTION = 0.15  # BERT: 15% of the tokens are predicted

# The transformers loss inputs of each supported architecture: HF keyword -> where it comes
# from ("masked_lm": `hf_labels(batch)`, else a field of the batch). The plmkit side trains
# on the family's default objective (bert: mlm+nsp, roberta: mlm, albert: mlm+sop), whose
# sentence label (NSP or SOP) travels in `next_sentence_labels`.
HF_TARGETS: dict[str, dict[str, str]] = {
    "BertForPreTraining": {"labels": "masked_lm", "next_sentence_label": "next_sentence_labels"},
    "ErnieForPreTraining": {"labels": "masked_lm",
                            "next_sentence_label": "next_sentence_labels"},
    "RobertaForMaskedLM": {"labels": "masked_lm"},
    "AlbertForPreTraining": {"labels": "masked_lm",
                             "sentence_order_label": "next_sentence_labels"},
    # ELECTRA: the generator's (ElectraForMaskedLM) MLM labels; the discriminator's labels
    # (replaced or not) follow from the generator's samples inside the step (`electra_steps`).
    "ElectraForPreTraining": {"labels": "masked_lm"},
    # XLNet: the `plm` objective's two-stream batch, the query stream predicting the targets.
    "XLNetLMHeadModel": {"perm_mask": "perm_mask", "target_mapping": "target_mapping",
                         "labels": "target_ids"},
    # The Transformer: teacher forcing; `HFMarian.loss` smooths the labels as plmkit does.
    "MarianMTModel": {"decoder_input_ids": "decoder_input_ids", "labels": "labels"},
}
# transformers' XLNet has no SDPA attention.
ATTN_IMPLEMENTATION = {"XLNetLMHeadModel": "eager"}
# `plmkit bench --models suite`: every family at tiny, small and base (BERT also at mini, the
# size of issue 10's 2x target).
SUITE = [f"{family}-{size}" for family in ("bert", "roberta", "albert", "electra", "xlnet",
                                           "ernie", "transformer")
         for size in ("tiny", "mini", "small", "base") if size != "mini" or family == "bert"]


@dataclass
class Record:
    """One measured configuration."""

    family: str
    size: str
    mode: str  # see MODES
    dtype: str  # see DTYPES
    batch: int
    seq: int
    reps: int
    plmkit_tok_s: float
    hf_tok_s: float
    ratio: float  # hf median seconds / plmkit median seconds
    ratio_lo: float  # lowest and highest ratio of one interleaved (plmkit, hf) pair:
    ratio_hi: float  # how much the machine's noise moved the figure
    plmkit_peak_mb: float | None = None  # see peak_step_bytes
    hf_peak_mb: float | None = None
    # ELECTRA train rows only: plmkit's median seconds of one `electra` step over those of one
    # `mlm` step of a BERT with the discriminator's shape (Clark et al. 2020's BERT-Small for
    # electra-small: L12 H256 A4 FF1024 E128), measured interleaved; None elsewhere.
    vs_mlm: float | None = None
    # Model FLOPs of one step (matmuls and attention as plmkit computes them: forward, plus
    # backward when training; `step_flops`) and each side's share of the matmul peak of its
    # dtype measured in the same run (`matmul_peak`): model FLOPs utilisation.
    flops: float | None = None
    plmkit_mfu: float | None = None
    hf_mfu: float | None = None


MODES = {
    "train": "forward + backward + fused AdamW step (the default of plmkit's trainer and of "
             "transformers' Trainer on torch >= 2.8), the family's pretraining loss (BERT and "
             "ERNIE MLM+NSP, RoBERTa MLM, ALBERT MLM+SOP, ELECTRA generator MLM + 50 x "
             "discriminator, one optimizer over both; XLNet two-stream PLM on the query stream; "
             "the Transformer label-smoothed teacher forcing)",
    "train-foreach": "as train, with torch's multi-tensor (foreach) AdamW on both sides",
    "train-compiled": "as train, plmkit's forward and backward through torch.compile (`plmkit "
                      "pretrain --compile`, compiled before timing) against transformers' eager "
                      "step",
    "train-defaults": "as train, each side with what a user gets out of the box: plmkit "
                      "with bf16 autocast where the hardware runs bf16 fast "
                      "(`plmkit.training.precision.fast_bf16`), transformers in float32; the dtype "
                      "option does not apply",
    "infer-compiled": "as infer, plmkit's fast inference path (`plmkit.deploy.inference.optimize`: "
                      "bf16 weights where the hardware runs bf16 fast, torch.compile with "
                      "frozen weights) against transformers' eager model in the same dtype "
                      "(`.to(bfloat16)`, as `torch_dtype=bfloat16` loads it); the dtype "
                      "option does not apply",
    "serve": "runs alone: plmkit eager fp32, `plmkit.deploy.inference.optimize` bf16 and int8, "
             "ONNX Runtime fp32 and int8 on one export, interleaved at batch 1 and 32; then "
             "`plmkit serve` under load on both backends (`plmkit/bench/serve.py`)",
    "finetune": "runs alone: `plmkit finetune` against transformers' Trainer, whole runs from "
                "the same weights, data, settings and seed: seconds, tokens/s and the final "
                "metric (`plmkit/bench/finetune.py`)",
    "infer": "forward of the encoder and pooler (RobertaForMaskedLM's base has no pooler; "
             "ELECTRA: the discriminator's encoder; XLNet: the content stream), no gradients",
}
# float32, or bf16 autocast around the forward pass (and loss) of both sides alike.
DTYPES = {"float32": None, "bfloat16": torch.bfloat16}
CPU = torch.device("cpu")  # where `plmkit bench` runs unless told otherwise


def pretraining_batch(vocab: int, batch: int, seq: int, seed: int = 0,
                      segments: bool = True) -> dict[str, Tensor]:
    """A synthetic batch in the reference BERT fields, 15% of positions masked; segment ids
    0 then 1, or all 0 without `segments` (RoBERTa's single segment type)."""
    g = torch.Generator().manual_seed(seed)
    preds = max(1, round(seq * MASK_FRACTION))
    positions = torch.stack([torch.randperm(seq - 1, generator=g)[:preds] + 1
                             for _ in range(batch)]).sort(-1).values  # (B, P)
    return {
        "input_ids": torch.randint(5, vocab, (batch, seq), generator=g),
        "input_mask": torch.ones(batch, seq, dtype=torch.long),
        "segment_ids": ((torch.arange(seq) >= seq // 2) & segments).long()
        .expand(batch, -1).contiguous(),
        "masked_lm_positions": positions,
        "masked_lm_ids": torch.randint(5, vocab, (batch, preds), generator=g),
        "masked_lm_weights": torch.ones(batch, preds),
        "next_sentence_labels": torch.randint(0, 2, (batch,), generator=g),
    }


def plm_batch(config: Any, batch: int, seq: int, seed: int = 0) -> dict[str, Tensor]:
    """A synthetic batch of XLNet's `plm` objective: segments A, B and a final [CLS] (ids 0, 1,
    2), seq // K targets per row at random positions, a random factorization order over them
    and [CLS] (`permutation_masks`); `perm_mask` as float, as transformers documents it. Its
    `mem_key` never follows a cached step, so no memory is read (transformers trains without)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, config.vocab_size, (batch, seq), generator=g)  # (B, S)
    preds = max(1, seq // K)
    picks = torch.stack([torch.randperm(seq - 1, generator=g)[:preds] for _ in range(batch)])
    is_target = torch.zeros(batch, seq, dtype=torch.bool).scatter_(1, picks, True)  # (B, S)
    functional = torch.zeros_like(is_target)
    functional[:, -1] = True  # [CLS] at the end
    segments = torch.ones(batch, seq, dtype=torch.long)
    segments[:, : seq // 2], segments[:, -1] = 0, 2
    mapping, positions, weights = target_mapping(is_target, preds)  # (B, P, S), (B, P) x 2
    return {
        "input_ids": ids,
        "input_mask": torch.ones_like(ids),
        "segment_ids": segments,
        "perm_mask": permutation_masks(is_target, functional, g).float(),  # (B, S, S)
        "target_mapping": mapping,
        "target_positions": positions,
        "target_ids": ids.gather(1, positions),
        "target_weights": weights,
        "mem_key": torch.tensor([-1, 0, 0]),
        "reuse_len": torch.full((batch,), config.reuse_len or 0),
    }


def seq2seq_batch(config: Any, batch: int, seq: int, seed: int = 0) -> dict[str, Tensor]:
    """A synthetic `seq2seq` batch: `seq` source and `seq` target tokens per row, no padding;
    the decoder reads <s> and the target shifted right."""
    g = torch.Generator().manual_seed(seed)
    source = torch.randint(5, config.vocab_size, (batch, seq), generator=g)  # (B, S)
    labels = torch.randint(5, config.vocab_size, (batch, seq), generator=g)  # (B, T)
    start = torch.full((batch, 1), config.bos_token_id)
    mask = torch.ones_like(source)
    return {"input_ids": source, "input_mask": mask, "attention_mask": mask, "labels": labels,
            "decoder_input_ids": torch.cat([start, labels[:, :-1]], dim=1)}


# The synthetic batches of the objectives whose inputs are not BERT's fields, by name.
OWN_BATCHES: dict[str, Callable[[Any, int, int], dict[str, Tensor]]] = {
    "plm": plm_batch, "seq2seq": seq2seq_batch}


def bench_batch(config: Any, batch: int, seq: int) -> dict[str, Tensor]:
    """The synthetic batch of the family's default objective: its own (`OWN_BATCHES`), else
    `pretraining_batch` (one segment type for RoBERTa)."""
    own = OWN_BATCHES.get(get_family(config.family).default_objective)
    if own is not None:
        return own(config, batch, seq)
    return pretraining_batch(config.vocab_size, batch, seq,
                             segments=getattr(config, "type_vocab_size", 2) > 1)


def hf_labels(batch: dict[str, Tensor]) -> Tensor:
    """The same masked-LM targets as transformers wants them: (B, S), -100 elsewhere."""
    labels = torch.full_like(batch["input_ids"], -100)
    return labels.scatter_(1, batch["masked_lm_positions"], batch["masked_lm_ids"])


def hf_architecture(preset: str) -> str:
    """The transformers class the bench loads `preset` into: its family's `hf.architecture`,
    or the one a family plmkit does not export is copied into (`COPIES`)."""
    family = get_family(preset_config(preset).family)
    if family.name in COPIES:
        return COPIES[family.name][0]
    if family.hf is None or family.hf.architecture not in HF_TARGETS:
        raise UserError(f"plmkit bench has no transformers counterpart for {preset!r}; "
                        f"it covers {', '.join(sorted(HF_TARGETS))}")
    return family.hf.architecture


def twins(preset: str, **overrides: Any) -> tuple[nn.Module, nn.Module]:
    """A plmkit model (`overrides`: of the preset's config) and the transformers model holding
    the very same weights."""
    import transformers

    architecture = hf_architecture(preset)
    cls = getattr(transformers, architecture)
    ours = build(preset_config(preset, **overrides))
    if ours.config.family in COPIES:
        return ours, COPIES[ours.config.family][1](ours)
    transformers.utils.logging.disable_progress_bar()  # no "Loading weights" bar per model
    with tempfile.TemporaryDirectory() as tmp:
        save_hf(ours, tmp)
        theirs = cls.from_pretrained(
            tmp, attn_implementation=ATTN_IMPLEMENTATION.get(architecture, "sdpa"))
        if cls is transformers.ElectraForPreTraining:
            generator = transformers.ElectraForMaskedLM.from_pretrained(
                Path(tmp) / "generator", attn_implementation="sdpa")
            theirs = HFElectra(generator, theirs)
    return ours, theirs


class HFElectra(nn.Module):
    """transformers' ELECTRA pretraining pair: ElectraForMaskedLM (generator) and
    ElectraForPreTraining (discriminator), sharing the embeddings as plmkit's model does
    (Clark et al. 2020, section 3.2): the generator uses the discriminator's embedding
    modules and its output layer is tied to their token embedding. Each keeps its own
    E -> H projection."""

    architecture = "ElectraForPreTraining"  # `hf_inputs`
    base_model_prefix = "electra"  # `infer_steps`: the discriminator's encoder

    def __init__(self, generator: nn.Module, discriminator: nn.Module):
        super().__init__()
        self.generator, self.discriminator = generator, discriminator
        shared = discriminator.electra.embeddings
        generator.electra.embeddings = shared
        generator.generator_lm_head.weight = shared.word_embeddings.weight

    @property
    def electra(self) -> nn.Module:
        return self.discriminator.electra

    def loss(self, inputs: dict[str, Tensor], batch: dict[str, Tensor],
             disc_weight: float = 50.0) -> tuple[Tensor, Tensor]:
        """Generator MLM loss + `disc_weight` x discriminator loss, and the MLM loss alone.
        Replacements are drawn from the generator's detached softmax at the masked positions."""
        out = self.generator(**inputs)  # logits (B, S, V); loss over the labelled positions
        positions = batch["masked_lm_positions"]  # (B, P)
        logits = out.logits.detach().gather(
            1, positions.unsqueeze(-1).expand(-1, -1, out.logits.shape[-1]))  # (B, P, V)
        probs = logits.float().softmax(-1).flatten(0, 1)  # (B*P, V)
        sampled = torch.multinomial(probs, 1).view_as(positions)  # (B, P)
        original = batch["input_ids"].scatter(1, positions, batch["masked_lm_ids"])  # (B, S)
        fake = original.scatter(1, positions, sampled)
        disc = self.discriminator(input_ids=fake, attention_mask=inputs["attention_mask"],
                                  token_type_ids=inputs["token_type_ids"],
                                  labels=(fake != original).long())
        return out.loss + disc_weight * disc.loss, out.loss


def marian_twin(ours: nn.Module) -> HFMarian:
    """transformers' MarianMTModel holding the weights of plmkit Transformer `ours`
    (`plmkit.interop.marian`), with plmkit's loss."""
    return HFMarian(to_marian(ours))


class HFMarian(nn.Module):
    """MarianMTModel with plmkit's label smoothing (eps on the V - 1 wrong tokens, `objectives/
    seq2seq.py`): torch's `label_smoothing` spreads its eps over all V tokens, so it gets
    eps V / (V - 1), which is the same target distribution."""

    architecture = "MarianMTModel"

    def __init__(self, marian: nn.Module):
        super().__init__()
        self.marian = marian

    def loss(self, inputs: dict[str, Tensor], batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """The label-smoothed loss and the plain nll over the labelled tokens."""
        inputs = {k: v for k, v in inputs.items() if k != "labels"}
        logits = self.marian(**inputs).logits.float()  # (B, T, V)
        v = logits.shape[-1]
        flat, labels = logits.flatten(0, 1), batch["labels"].flatten()
        smooth = F.cross_entropy(flat, labels, label_smoothing=LABEL_SMOOTHING * v / (v - 1))
        return smooth, F.cross_entropy(flat.detach(), labels)

    def forward(self, input_ids: Tensor, attention_mask: Tensor,
                decoder_input_ids: Tensor) -> Tensor:
        """The full teacher-forced forward -> logits (B, T, V) (the `infer` mode)."""
        return self.marian(input_ids=input_ids, attention_mask=attention_mask,
                           decoder_input_ids=decoder_input_ids).logits


# Families plmkit does not export, and the transformers model their weights are copied into
# (`plmkit.interop.marian`): family -> (architecture, the copy with the bench's loss).
COPIES: dict[str, tuple[str, Callable[[nn.Module], nn.Module]]] = {
    "transformer": ("MarianMTModel", marian_twin)}


def hf_inputs(theirs: nn.Module, batch: dict[str, Tensor]) -> dict[str, Tensor]:
    """The transformers model's inputs for `batch`, its loss targets included (ELECTRA: the
    generator's)."""
    targets = HF_TARGETS[getattr(theirs, "architecture", type(theirs).__name__)]
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["input_mask"]}
    if "segment_ids" in batch:
        inputs["token_type_ids"] = batch["segment_ids"]
    for key, source in targets.items():
        inputs[key] = hf_labels(batch) if source == "masked_lm" else batch[source]
    return inputs


def autocast(dtype: str, device: torch.device = CPU):
    """The same precision context for both sides: nothing for float32, else autocast on
    `device`."""
    if DTYPES[dtype] is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=DTYPES[dtype])


def parse_device(name: str) -> torch.device:
    """`plmkit bench --device`: a torch device this machine has."""
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise UserError(f"--device {name!r}: {error}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name!r}: torch sees no CUDA device on this machine")
    if device.type not in ("cpu", "cuda"):
        raise UserError(f"--device {name!r}: plmkit bench runs on cpu or cuda")
    return device


def on_device(model: nn.Module, batch: dict[str, Tensor], device: torch.device
              ) -> tuple[nn.Module, dict[str, Tensor]]:
    """`model` and `batch` moved to `device`."""
    return model.to(device), {k: v.to(device) for k, v in batch.items()}


def synced(fn: Callable[[], None], device: torch.device) -> Callable[[], None]:
    """`fn`, returning only once `device` has finished its work (CUDA runs asynchronously, so
    a timer around `fn` alone would measure the launches); `fn` itself elsewhere."""
    if device.type != "cuda":
        return fn

    def call() -> None:
        fn()
        torch.cuda.synchronize(device)

    return call


def train_steps(ours: nn.Module, theirs: nn.Module, batch: dict[str, Tensor],
                dtype: str = "float32", fused: bool = True, hf_dtype: str | None = None,
                compiled: bool = False):
    """One optimizer step for each side, with identical AdamW settings; plmkit trains on its
    family's default objective (through `torch.compile` when `compiled`), transformers on the
    same targets (`HF_TARGETS`), in `hf_dtype` where given, else in `dtype`."""
    objective = get_objective(get_family(ours.config.family).default_objective)
    opt_a = torch.optim.AdamW(ours.parameters(), lr=1e-4, weight_decay=0.01, fused=fused or None)
    opt_b = torch.optim.AdamW(theirs.parameters(), lr=1e-4, weight_decay=0.01, fused=fused or None)
    inputs = hf_inputs(theirs, batch)
    device = batch["input_ids"].device

    def forward() -> Tensor:
        return objective(ours, batch)[0]

    loss_a = torch.compile(forward) if compiled else forward

    def a() -> None:
        with autocast(dtype, device):
            loss = loss_a()
        loss.backward()
        opt_a.step()
        opt_a.zero_grad(set_to_none=True)

    def b() -> None:
        with autocast(hf_dtype or dtype, device):
            if isinstance(theirs, HFElectra | HFMarian):
                loss = theirs.loss(inputs, batch)[0]
            else:
                loss = theirs(**inputs).loss
        loss.backward()
        opt_b.step()
        opt_b.zero_grad(set_to_none=True)

    return a, b


def mlm_twin(config: Any) -> nn.Module:
    """A plmkit BERT with the encoder shape of `config` (ELECTRA: the discriminator's)."""
    fields = ("vocab_size", "hidden_size", "num_layers", "num_heads", "intermediate_size",
              "max_positions", "type_vocab_size", "embedding_size")
    return build(preset_config("bert-base", **{k: getattr(config, k) for k in fields}))


def mlm_step(model: nn.Module, batch: dict[str, Tensor], dtype: str = "float32",
             fused: bool = True) -> Callable[[], None]:
    """One plmkit `mlm` optimizer step of `model`, with the settings of `train_steps`."""
    objective = get_objective("mlm")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01, fused=fused or None)
    device = batch["input_ids"].device

    def step() -> None:
        with autocast(dtype, device):
            loss = objective(model, batch)[0]
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def infer_steps(ours: nn.Module, theirs: nn.Module, batch: dict[str, Tensor],
                dtype: str = "float32"):
    """One forward pass for each side, hidden states only (the Transformer: encoder, decoder
    and output logits, teacher-forced), no gradients."""
    args = (batch["input_ids"], batch["input_mask"], batch.get("segment_ids"))
    target = {k: batch[k] for k in ("decoder_input_ids",) if k in batch}
    device = args[0].device
    if isinstance(theirs, HFMarian):
        base, extra = theirs, target
    else:
        base, extra = getattr(theirs, theirs.base_model_prefix), {"token_type_ids": args[2]}

    @torch.no_grad()
    def a() -> None:
        with autocast(dtype, device):
            ours(*args, **target)

    @torch.no_grad()
    def b() -> None:
        with autocast(dtype, device):
            base(input_ids=args[0], attention_mask=args[1], **extra)

    return a, b


def compiled_infer_steps(ours: nn.Module, theirs: nn.Module, batch: dict[str, Tensor]):
    """`infer_steps` of plmkit's optimized copy of `ours` (compiled at its first call) and of
    a copy of transformers' model in the same dtype, both without autocast."""
    from plmkit.deploy.inference import optimize

    fast = optimize(ours)
    dtype = next(fast.parameters()).dtype
    theirs = copy.deepcopy(theirs).to(dtype).eval()
    return infer_steps(fast, theirs, batch)


def steps(mode: str, ours: nn.Module, theirs: nn.Module, batch: dict[str, Tensor], dtype: str):
    """The (plmkit, transformers) pair of step functions for `mode`."""
    if mode == "infer":
        return infer_steps(ours, theirs, batch, dtype)
    if mode == "infer-compiled":
        return compiled_infer_steps(ours, theirs, batch)
    if mode == "train-defaults":
        own = default_dtype(batch["input_ids"].device)
        return train_steps(ours, theirs, batch, own, hf_dtype="float32")
    return train_steps(ours, theirs, batch, dtype, fused=mode != "train-foreach",
                       compiled=mode == "train-compiled")


def default_dtype(device: torch.device = CPU) -> str:
    """The dtype plmkit trains in by default on `device` (`precision.fast_bf16`)."""
    return "bfloat16" if fast_bf16(device) else "float32"


def peak_dtypes(modes: list[str], dtypes: tuple[str, ...]) -> list[str]:
    """The dtypes whose matmul peak the MFU of these modes and dtypes is relative to."""
    own = {default_dtype()} if {"train-defaults", "infer-compiled"} & set(modes) else set()
    return sorted({*dtypes, *own, "float32"} if "train-defaults" in modes else {*dtypes, *own})


def matmul_peak(dtype: str, sizes: tuple[int, ...] = (1024, 2048, 3072), reps: int = 5,
                device: torch.device = CPU) -> float:
    """FLOP/s of `device`'s best square matmul in `dtype` (float32, or bfloat16 as autocast
    runs it), at the current thread count: the best size's median of `reps`."""
    best = 0.0
    for n in sizes:
        a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
        if dtype != "float32":
            a, b = a.to(DTYPES[dtype]), b.to(DTYPES[dtype])
        product = synced(lambda a=a, b=b: a @ b, device)
        product()  # warm-up
        times = []
        for _ in range(reps):
            start = time.perf_counter()
            product()
            times.append(time.perf_counter() - start)
        best = max(best, 2 * n**3 / statistics.median(times))
    return best


def step_flops(fn: Callable[[], None]) -> float:
    """Model FLOPs of one call of `fn` as torch counts them (matmuls and attention, forward and
    backward; nothing for the optimizer, embeddings or elementwise work), CPU flash attention
    included (torch's counter knows only the CUDA kernels)."""
    from torch.utils import flop_counter

    aten = torch.ops.aten
    cpu_flash = {
        aten._scaled_dot_product_flash_attention_for_cpu:
            lambda q, k, v, *_, **__: flop_counter.sdpa_flop_count(q, k, v),
        aten._scaled_dot_product_flash_attention_for_cpu_backward:
            lambda g, q, k, v, *_, **__: flop_counter.sdpa_backward_flop_count(g, q, k, v),
    }
    with flop_counter.FlopCounterMode(display=False, custom_mapping=cpu_flash) as counter:
        fn()
    return float(counter.get_total_flops())


def interleaved(a: Callable[[], None], b: Callable[[], None],
                reps: int) -> tuple[list[float], list[float]]:
    """Seconds of a and of b over `reps` alternating runs (a b a b ...), after one warm-up each."""
    a(), b()
    ta, tb = [], []
    for _ in range(reps):
        for fn, times in ((a, ta), (b, tb)):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    return ta, tb


def peak_step_bytes(fn: Callable[[], None], device: torch.device = CPU) -> int:
    """Peak bytes of `device` tensors that `fn` allocates above what was alive when it started.

    On CUDA, from the caching allocator's peak statistics. On the CPU, read from the
    allocation events of one profiled run (the profiler's `profile_memory`), so it is per side
    even with both models in one process; it counts activations, gradients and temporaries,
    not the weights and optimizer state that exist before the step (equal in size on both
    sides). Process-wide figures such as max RSS cannot be split per side.
    """
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        start = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - start
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    # Kineto, the profiler's backend, logs "USDT: ... profiler_start" / "profiler_stop" on
    # stderr at every run unless its level (read once, at its first use) is above 5.
    os.environ.setdefault("KINETO_LOG_LEVEL", "6")
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e for e in prof.profiler.kineto_results.events()
                     if e.name() == "[memory]" and e.device_type() == DeviceType.CPU),
                    key=lambda e: e.start_ns())
    live = peak = 0
    for e in events:
        live += e.nbytes()
        peak = max(peak, live)
    return peak


def run(presets: list[str], modes: list[str], batch: int, seq: int, reps: int, *,
        dtypes: tuple[str, ...] = ("float32",), memory: bool = True,
        peaks: dict[str, float] | None = None, remeasure: bool = False,
        device: torch.device = CPU) -> list[Record]:
    """Measure every preset in every mode and dtype on `device`; `memory` adds one profiled
    step per side, `peaks` (FLOP/s by dtype, `matmul_peak`) one FLOP-counted step and the MFU
    columns.

    With `remeasure`, each peak is measured again after every preset and `peaks` keeps the
    highest (updated in place); every MFU is then taken against those: a peak measured while
    the machine was briefly slower would otherwise inflate the whole run's MFU."""
    for name, given, known in (("mode", modes, MODES), ("dtype", dtypes, DTYPES)):
        if unknown := [v for v in given if v not in known]:
            raise UserError(f"unknown bench {name} {unknown[0]!r}; choose from {sorted(known)}")
    records = []
    for preset in presets:
        ours, theirs = twins(preset, **positions(preset, seq))
        theirs, data = on_device(theirs, bench_batch(ours.config, batch, seq), device)
        ours = ours.to(device)
        family = preset.rsplit("-", 1)[0]
        for dtype in dtypes:
            for mode in modes:
                if mode == "train-defaults" and dtype != dtypes[0]:
                    continue  # one row: the dtypes are each side's default
                record, a, b = measure(preset, ours, theirs, data, mode, dtype, reps)
                compiled = mode.endswith("-compiled")
                if compiled:  # FLOPs: the eager model's work; no memory column
                    eager = infer_steps if mode == "infer-compiled" else train_steps
                    a, b = eager(ours, theirs, data, record.dtype)
                elif family == "electra" and mode.startswith("train"):
                    record.vs_mlm = vs_mlm(ours.config, a, data, record.dtype, mode, reps)
                if memory and not compiled:
                    record.plmkit_peak_mb = peak_step_bytes(a, device) / 2**20
                    record.hf_peak_mb = peak_step_bytes(b, device) / 2**20
                if peaks:
                    record.flops = step_flops(a)
                records.append(record)
        if peaks and remeasure:
            peaks.update({d: max(f, matmul_peak(d, device=device)) for d, f in peaks.items()})
    if peaks:
        for record in records:
            add_mfu(record, record.flops or 0.0, peaks)
    return records


def positions(preset: str, seq: int) -> dict[str, int]:
    """The config override that gives `preset` a position table of `seq` tokens where its own
    is shorter (sequence-length curves beyond BERT's 512), else none."""
    known = getattr(preset_config(preset), "max_positions", None)
    return {"max_positions": seq} if known is not None and known < seq else {}


def measure(preset: str, ours: nn.Module, theirs: nn.Module, data: dict[str, Tensor],
            mode: str, dtype: str, reps: int
            ) -> tuple[Record, Callable[[], None], Callable[[], None]]:
    """The interleaved timing of one (preset, mode, dtype), and the two (warm) step functions."""
    ours.train(not mode.startswith("infer"))
    theirs.train(not mode.startswith("infer"))
    device = data["input_ids"].device
    a, b = (synced(fn, device) for fn in steps(mode, ours, theirs, data, dtype))
    ta, tb = interleaved(a, b, reps)
    pairs = [y / x for x, y in zip(ta, tb, strict=True)]
    ma, mb = statistics.median(ta), statistics.median(tb)
    batch, seq = data["input_ids"].shape
    tokens = batch * seq
    if mode == "train-defaults":
        dtype = f"{default_dtype(device)}/float32"
    elif mode == "infer-compiled":
        dtype = default_dtype(device)
    family, size = preset.rsplit("-", 1)
    record = Record(family, size, mode, dtype, batch, seq, reps, tokens / ma, tokens / mb,
                    mb / ma, min(pairs), max(pairs))
    return record, a, b


def vs_mlm(config: Any, electra_step: Callable[[], None], data: dict[str, Tensor], dtype: str,
           mode: str, reps: int) -> float:
    """An ELECTRA step's median time over that of a same-shape BERT `mlm` step, interleaved."""
    bert = mlm_twin(config).to(data["input_ids"].device).train()
    dtype = dtype.split("/")[0]  # train-defaults: plmkit's dtype
    te, tm = interleaved(electra_step, mlm_step(bert, data, dtype, mode != "train-foreach"), reps)
    return statistics.median(te) / statistics.median(tm)


def add_mfu(record: Record, flops: float, peaks: dict[str, float]) -> None:
    """Set the record's model FLOPs per step and each side's fraction of its dtype's peak."""
    ours_dtype, _, hf_dtype = record.dtype.partition("/")
    tokens = record.batch * record.seq
    record.flops = flops
    record.plmkit_mfu = flops * record.plmkit_tok_s / tokens / peaks[ours_dtype]
    record.hf_mfu = flops * record.hf_tok_s / tokens / peaks[hf_dtype or ours_dtype]


def cpu_model() -> str:
    """The CPU's model name as lscpu prints it, where Linux tells it."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    import transformers

    from plmkit.training import allocator

    bf16 = sorted(BF16_FLAGS & cpu_flags())
    return {"machine": platform.machine(), "processor": cpu_model(),
            "cpus": os.cpu_count() or 0, "threads": torch.get_num_threads(),
            "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
                                / 2**30, 1),
            "bf16_instructions": ", ".join(bf16) or "none",
            "bf16_speedup": round(cpu_bf16_speedup(), 2), "allocator": allocator.in_use(),
            "torch": torch.__version__, "transformers": transformers.__version__,
            "python": platform.python_version(),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def table(records: list[Record]) -> str:
    """A fixed-width table of the records; the memory, `vs mlm` and MFU columns only where some
    record has them."""
    extra = [(name, width, cell) for name, width, cell in COLUMNS
             if any(cell(r) is not None for r in records)]
    head = (f"{'model':<18}{'mode':<15}{'dtype':<16}{'batch x seq':>11}{'plmkit tok/s':>14}"
            f"{'hf tok/s':>10}{'ratio':>8}{'pairs':>13}"
            + "".join(f"{name:>{width}}" for name, width, _ in extra))
    rows = [f"{r.family + '-' + r.size:<18}{r.mode:<15}{r.dtype:<16}{f'{r.batch}x{r.seq}':>11}"
            f"{r.plmkit_tok_s:>14.0f}{r.hf_tok_s:>10.0f}{r.ratio:>7.2f}x"
            f"{f'{r.ratio_lo:.2f}-{r.ratio_hi:.2f}':>13}"
            + "".join(f"{cell(r) or '':>{width}}" for _, width, cell in extra)
            for r in records]
    return "\n".join([head, *rows])


def _fmt(value: float | None, spec: str) -> str | None:
    return None if value is None else format(value, spec)


# The optional columns of `table`: header, width, cell text (None where the record has none).
COLUMNS: list[tuple[str, int, Callable[[Record], str | None]]] = [
    ("plmk MB", 9, lambda r: _fmt(r.plmkit_peak_mb, ".0f")),
    ("hf MB", 9, lambda r: _fmt(r.hf_peak_mb, ".0f")),
    ("plmk MFU", 10, lambda r: _fmt(r.plmkit_mfu, ".0%")),
    ("hf MFU", 8, lambda r: _fmt(r.hf_mfu, ".0%")),
    ("vs mlm", 8, lambda r: None if r.vs_mlm is None else f"{r.vs_mlm:.2f}x"),
]


def write_json(records: list[Record], path: Path, peaks: dict[str, float] | None = None,
               command: str = "") -> None:
    """The records as a JSON list (DESIGN.md's public format), each with the machine details,
    the matmul peaks (FLOP/s by dtype) and the command that produced them."""
    extra = {**machine(), "matmul_peak_flops": peaks or {}, "command": command}
    path.write_text(json.dumps([{**asdict(r), **extra} for r in records], indent=2) + "\n")


def write_records(path: Path, modes: dict[str, Sequence[Any]], command: str) -> None:
    """Dataclass records of other benchmarks (serve, data) as one JSON list: each record with
    its `mode` (the key it came under), the machine details and the command."""
    extra = {**machine(), "command": command}
    rows = [{"mode": mode, **asdict(r), **extra} for mode, records in modes.items()
            for r in records]
    path.write_text(json.dumps(rows, indent=2) + "\n")


def read_json(path: Path) -> dict[str, Any]:
    """A report written by `write_json`: command, machine, matmul peaks and the `Record`s."""
    fields = {f.name for f in dataclasses.fields(Record)}
    try:
        rows = json.loads(path.read_text())
        first = rows[0]
        return {"command": first.get("command", ""),
                "machine": {k: v for k, v in first.items()
                            if k not in fields and k not in ("command", "matmul_peak_flops")},
                "matmul_peak_flops": first.get("matmul_peak_flops", {}),
                "records": [Record(**{k: v for k, v in r.items() if k in fields})
                            for r in rows]}
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError) as e:
        raise UserError(f"{path}: not a plmkit bench report ({e})") from None


BEGIN, END = "<!-- plmkit bench: begin -->", "<!-- plmkit bench: end -->"


def markdown(report: dict[str, Any], markers: tuple[str, str] = (BEGIN, END),
             image: str | None = None) -> str:
    """The report as a Markdown section between `markers`: command, machine, peaks, the
    table, and the `image` (a PNG's path relative to the Markdown file) where given."""
    info = report["machine"]
    peaks = ", ".join(f"{d} {f / 1e9:,.0f} GFLOP/s"
                      for d, f in report["matmul_peak_flops"].items()) or "not measured"
    speedup = f" (bf16 matmul {info['bf16_speedup']}x float32)" if "bf16_speedup" in info else ""
    return "\n".join([
        markers[0],
        "Generated by `plmkit bench` from its JSON report; do not edit by hand.",
        "", "```", report["command"], "```", "",
        f"Machine: {info['processor']}, {info['cpus']} CPUs, {info['threads']} threads, "
        f"{info['memory_gib']} GiB; bf16 instructions: {info['bf16_instructions']}{speedup}; "
        f"allocator {info['allocator']} (both sides: one process); torch {info['torch']}, "
        f"transformers {info['transformers']}, Python {info['python']}; {info['date']}.",
        f"Matmul peak measured in the same run (the highest of its measurements): {peaks}.",
        "", "```", table(report["records"]), "```",
        *([] if image is None else ["", f"![plmkit bench]({image})"]), markers[1]])


def update_markdown(path: Path, section: str, markers: tuple[str, str] = (BEGIN, END)) -> None:
    """Replace the generated section of `path` (between `markers`), or append it."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    begin, end = markers
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + section + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
