"""The options of `plmkit distill` (`plmkit.jobs.distill`): one dataclass whose field metadata
(`plmkit.tasks.options.cli`) the command line builds its flags from. Kept apart from the job so
that building the parser imports no model code."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from plmkit.tasks.options import cli

# DistilBERT (Sanh et al. 2019; the reference training command): T = 2, loss weights
# 5 (soft targets), 2 (masked-LM), 1 (cosine of the last hidden states), lr 5e-4, 5% warmup.
DISTILBERT_WEIGHTS = {"alpha_ce": 5.0, "alpha_hard": 2.0, "alpha_cos": 1.0}
DISTILBERT_LR = 5e-4
DISTILBERT_WARMUP = 0.05
# Task distillation (Hinton et al. 2015, section 2): soft and hard targets weighted alike.
TASK_WEIGHTS = {"alpha_ce": 1.0, "alpha_hard": 1.0, "alpha_cos": 0.0}


@dataclass
class DistillArgs:
    """The options of `plmkit distill`. The mode follows from the teacher: a fine-tuned
    classifier (a `plmkit finetune` OUT) is distilled on --train (+ --unlabeled) into a
    fine-tuned student; a pretrained encoder with its masked-LM head on --corpus."""

    teacher: Path = field(metadata=cli(
        "a plmkit finetune OUT (task distillation) or a pretrained model directory, plmkit's "
        "or transformers' (pretraining distillation)", metavar="DIR"))
    out: Path = field(metadata=cli(
        "the student: a fine-tuned model directory (task) or a pretrained one, with its "
        "tokenizer, metrics.jsonl and distill.json", metavar="DIR"))
    student: str | None = field(default=None, metadata=cli(
        "a preset (PRESET[::KEY=VALUE...], e.g. bert-mini or bert-base::num_layers=3) or a "
        "model directory sharing the teacher's tokenizer; a preset of the teacher's shape "
        "starts from every other teacher layer (DistilBERT)", metavar="PRESET|DIR"))
    student_layers: int | None = field(default=None, metadata=cli(
        "instead of --student: the teacher's shape with N layers, initialised from every other "
        "teacher layer (DistilBERT, section 3)", metavar="N", minimum=1))
    train: Path | None = field(default=None, metadata=cli(
        "task: the labelled training file (csv, tsv, jsonl; jsonl records without a label "
        "count as unlabeled)", metavar="FILE"))
    eval: Path | None = field(default=None, metadata=cli(
        "task: evaluated every epoch; the best student is kept", metavar="FILE"))
    unlabeled: Path | None = field(default=None, metadata=cli(
        "task: more text, one a line (or csv / jsonl records), learnt from the teacher's soft "
        "labels alone", metavar="FILE"))
    corpus: list[Path] = field(default_factory=list, metadata=cli(
        "pretraining: comma-separated corpus files (txt, a blank line between documents; "
        "jsonl, parquet)"))
    temperature: float = field(default=2.0, metadata=cli(
        "softmax temperature of teacher and student (Hinton et al. 2015; DistilBERT: 2)"))
    alpha_ce: float | None = field(default=None, metadata=cli(
        "weight of KL(teacher/T || student/T) * T^2 (default: pretraining 5, task 1)"))
    alpha_hard: float | None = field(default=None, metadata=cli(
        "weight of the hard targets' cross entropy: the masked tokens (pretraining, default 2) "
        "or the labels where given (task, default 1)"))
    alpha_cos: float | None = field(default=None, metadata=cli(
        "weight of 1 - cos between last hidden states (DistilBERT; default: pretraining 1, "
        "task 0)"))
    alpha_hidden: float = field(default=0.0, metadata=cli(
        "weight of the hidden-state MSE through a learned projection, student layer m against "
        "teacher layer m*N/M and the embeddings (TinyBERT eq. 7)"))
    alpha_attn: float = field(default=0.0, metadata=cli(
        "weight of the attention-map MSE over the same layers (TinyBERT eq. 8; needs equal "
        "head counts)"))
    epochs: float = field(default=3.0, metadata=cli("task: passes over the training data"))
    steps: int = field(default=1000, metadata=cli("pretraining: optimizer steps", minimum=1))
    batch_size: int = field(default=32, metadata=cli("examples per batch", minimum=1))
    max_seq_len: int | None = field(default=None, metadata=cli(
        "tokens per example (default: the teacher's fine-tuning length; pretraining 128)",
        minimum=8))
    lr: float | None = field(default=None, metadata=cli(
        "peak learning rate (default: pretraining DistilBERT's 5e-4; task as plmkit finetune, "
        "by the student's width)"))
    seed: int = field(default=0, metadata=cli("seed of the student's fresh weights, data order "
                                              "and masks"))
    bf16: bool = field(default=False, metadata=cli("bf16 autocast"))
    progress: bool = field(default=True, metadata=cli(  # the option is --no-progress
        "no progress bar (terminal) or progress lines (a file or pipe)"))
