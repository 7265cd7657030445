"""`plmkit distill`: a small student trained to imitate a large teacher that shares its
vocabulary, by the one Trainer.

The loss (`distill_loss`) sums, each with its weight (`DistillArgs` alpha_*):
- soft targets: KL(softmax(t / T) || softmax(s / T)) * T^2 over the rows that have targets
  (Hinton et al. 2015, "Distilling the Knowledge in a Neural Network": T^2 keeps the gradients'
  scale as T changes), the masked positions' MLM logits in pretraining (DistilBERT, Sanh et
  al. 2019, section 2) or the class logits of a fine-tuned teacher (task distillation);
- hard targets: the masked tokens (DistilBERT's L_mlm) or the labels where the data has them;
- 1 - cos between the last hidden states of the real tokens (DistilBERT's L_cos);
- the hidden-state MSE, embeddings included, through one learned projection W_h when the
  widths differ (TinyBERT, Jiao et al. 2020, eq. 7 and 9), student layer m against teacher
  layer g(m) = m * N / M (TinyBERT's uniform mapping, section 4.1);
- the attention-map MSE of the same layers (TinyBERT eq. 8; on the softmax weights, over the
  real query positions, where TinyBERT's code takes the scores before the softmax).

The student comes from a preset, a directory, or the teacher's own shape with fewer layers; a
student whose every tensor has a teacher tensor of that shape starts from every other teacher
layer (DistilBERT section 3: "taking one layer out of two"). The mode follows from the
teacher: a fine-tuned classifier gives a fine-tuned OUT (`plmkit evaluate`, `predict` and
`serve` load it); a pretrained encoder gives a pretrained OUT to fine-tune.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from plmkit.data.options import DataOptions
from plmkit.data.shards import fingerprint, prepare
from plmkit.deploy.inspect import backbone_of, recording
from plmkit.errors import UserError
from plmkit.interop.native import (
    FINETUNE_CONFIG,
    TOKENIZER_DIR,
    Finetuned,
    load,
    load_finetuned,
    tokenizer_dir,
)
from plmkit.interop.start import is_checkpoint
from plmkit.jobs.distill_options import (
    DISTILBERT_LR,
    DISTILBERT_WARMUP,
    DISTILBERT_WEIGHTS,
    TASK_WEIGHTS,
    DistillArgs,
)
from plmkit.jobs.finetune import best_scores, task_train_config, write_json
from plmkit.jobs.options import parse_entry
from plmkit.jobs.pretrain import model_config
from plmkit.models import build
from plmkit.nn.block import EncoderBlock
from plmkit.objectives.mlm import MaskedLM
from plmkit.outputs import claim, refuse_inside, written_in_place
from plmkit.tasks.batching import ShuffledBatches, pad_collate
from plmkit.tasks.classify import ClassifyTask
from plmkit.tasks.options import default_lr
from plmkit.tokenizers import Tokenizer
from plmkit.training import TrainConfig, Trainer
from plmkit.training.checkpoint import seed_all
from plmkit.training.modeldir import is_native, read_description, save_model

Batch = dict[str, Tensor]
IGNORE = -100  # the target of a row without a hard label
DISTILL_RECORD = "distill.json"
PRETRAIN_SEQ_LEN = 128


# ---------------------------------------------------------------------------- the loss


@dataclass
class Weights:
    """The temperature and the weight of each loss term (see the module docstring)."""

    temperature: float
    ce: float
    hard: float
    cos: float
    hidden: float
    attn: float


@dataclass
class Forward:
    """What the loss reads of one model's forward pass on a batch."""

    logits: Tensor  # (R, C): the rows with targets (masked positions, or examples)
    hidden: list[Tensor]  # L + 1 of (T, H): the embeddings, then each layer; real tokens
    attention: list[Tensor]  # L of (B, h, S, S) softmax weights; empty unless recorded


def soft_target_loss(student: Tensor, teacher: Tensor, temperature: float) -> Tensor:
    """KL(softmax(teacher / T) || softmax(student / T)) per row, averaged over the rows, times
    T^2 (Hinton et al. 2015, section 2). student, teacher: (R, C) logits."""
    log_p = F.log_softmax(student.float() / temperature, -1)  # (R, C)
    q = F.softmax(teacher.float() / temperature, -1)
    return F.kl_div(log_p, q, reduction="batchmean") * temperature ** 2


def hard_target_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """Cross entropy of logits (R, C) on the rows whose target (R,) is not `IGNORE`; 0 (with
    a graph) when no row has one."""
    known = targets != IGNORE  # (R,)
    if not bool(known.any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits[known].float(), targets[known])


def cosine_loss(student: Tensor, teacher: Tensor) -> Tensor:
    """Mean over rows of 1 - cos(student, teacher); (T, H) each (DistilBERT's L_cos)."""
    return (1.0 - F.cosine_similarity(student.float(), teacher.float(), dim=-1)).mean()


def layer_map(student_layers: int, teacher_layers: int) -> list[int]:
    """g(m) = m * N / M for m = 0..M (TinyBERT section 4.1): the teacher state that student
    state m imitates, 0 being the embeddings."""
    return [m * teacher_layers // student_layers for m in range(student_layers + 1)]


def hidden_state_loss(student: list[Tensor], teacher: list[Tensor],
                      project: nn.Module) -> Tensor:
    """Sum over m of MSE(project(h_s[m]), h_t[g(m)]), (T, H) states (TinyBERT eq. 7, 9)."""
    g = layer_map(len(student) - 1, len(teacher) - 1)
    zero = student[0].new_zeros((), dtype=torch.float)
    return sum((F.mse_loss(project(s).float(), teacher[t].float())
                for s, t in zip(student, g, strict=True)), zero)


def attention_loss(student: list[Tensor], teacher: list[Tensor],
                   attention_mask: Tensor | None) -> Tensor:
    """Sum over student layers m of the MSE between its attention weights and teacher layer
    g(m)'s, (B, h, S, S) each, over the real query positions (TinyBERT eq. 8)."""
    g = layer_map(len(student), len(teacher))[1:]
    total = student[0].new_zeros((), dtype=torch.float)
    for s, t in zip(student, g, strict=True):
        error = (s.float() - teacher[t - 1].float()) ** 2  # (B, h, S, S)
        if attention_mask is None:
            total = total + error.mean()
            continue
        rows = attention_mask[:, None, :, None].to(error.dtype)  # (B, 1, S, 1)
        count = rows.sum() * error.shape[1] * error.shape[-1]
        total = total + (error * rows).sum() / count
    return total


def distill_loss(student: Forward, teacher: Forward, targets: Tensor, project: nn.Module,
                 attention_mask: Tensor | None, w: Weights) -> tuple[Tensor, dict[str, Tensor]]:
    """The weighted sum of the terms whose weight is not 0, and each term and the student's
    agreement with the teacher's top class as metrics."""
    terms: dict[str, Tensor] = {}
    if w.ce:
        terms["kd_loss"] = soft_target_loss(student.logits, teacher.logits, w.temperature)
    if w.hard:
        terms["hard_loss"] = hard_target_loss(student.logits, targets)
    if w.cos:
        terms["cos_loss"] = cosine_loss(project(student.hidden[-1]), teacher.hidden[-1])
    if w.hidden:
        terms["hidden_loss"] = hidden_state_loss(student.hidden, teacher.hidden, project)
    if w.attn:
        terms["attn_loss"] = attention_loss(student.attention, teacher.attention,
                                            attention_mask)
    weight = {"kd_loss": w.ce, "hard_loss": w.hard, "cos_loss": w.cos,
              "hidden_loss": w.hidden, "attn_loss": w.attn}
    loss = sum((weight[k] * v for k, v in terms.items()),
               student.logits.new_zeros((), dtype=torch.float))
    with torch.no_grad():
        agree = (student.logits.argmax(-1) == teacher.logits.argmax(-1)).float().mean()
    return loss, {**{k: v.detach() for k, v in terms.items()}, "agreement": agree}


# ---------------------------------------------------------------------- forward passes


class Rows(Protocol):
    """Where a batch's inputs, logits and hard targets are, in one mode."""

    def inputs(self, batch: Batch) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """input_ids (B, S), attention_mask (B, S), token_type_ids (B, S)."""
        ...

    def logits(self, model: nn.Module, output: Any, batch: Batch) -> Tensor:
        """(R, C): the rows with targets."""
        ...

    def targets(self, batch: Batch) -> Tensor:
        """(R,): a hard target per row, `IGNORE` where there is none."""
        ...


class MaskedRows:
    """Pretraining: the masked positions of BERT instances (`objectives/mlm.py` batches)."""

    def inputs(self, batch: Batch) -> tuple[Tensor, Tensor | None, Tensor | None]:
        return batch["input_ids"], batch["input_mask"], batch.get("segment_ids")

    def logits(self, model: nn.Module, output: Any, batch: Batch) -> Tensor:
        logits = model.mlm_logits(output.last_hidden_state,  # type: ignore[operator]
                                  batch["masked_lm_positions"])  # (B, P, V)
        return logits[batch["masked_lm_weights"] > 0]  # (R, V)

    def targets(self, batch: Batch) -> Tensor:
        return batch["masked_lm_ids"][batch["masked_lm_weights"] > 0]  # (R,)


class LabelRows:
    """Task distillation: one row per example (classification batches, `tasks/classify.py`)."""

    def inputs(self, batch: Batch) -> tuple[Tensor, Tensor | None, Tensor | None]:
        return batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids")

    def logits(self, model: nn.Module, output: Any, batch: Batch) -> Tensor:
        return output.logits  # (B, C)

    def targets(self, batch: Batch) -> Tensor:
        return batch["labels"]  # (B,)


def encoder_blocks(model: nn.Module) -> list[EncoderBlock]:
    """The encoder blocks of `model` (or its backbone); a UserError for other layouts."""
    blocks = [m for m in backbone_of(model).modules() if isinstance(m, EncoderBlock)]
    if not blocks:
        raise UserError(f"a {type(model).__name__} has no BERT-layout encoder blocks to distill")
    return blocks


@contextlib.contextmanager
def tapped(model: nn.Module, attention: bool) -> Iterator[tuple[list[Tensor], list[Tensor]]]:
    """Inside the block, every forward of `model` fills the lists yielded: the hidden states
    (the first encoder block's input, then each block's output, real tokens as the encoder
    runs them) and, with `attention`, each layer's attention weights."""
    hidden: list[Tensor] = []
    blocks = encoder_blocks(model)

    def first_input(_: nn.Module, args: tuple[Any, ...]) -> None:
        if not hidden:
            hidden.append(args[0])

    hooks = [h for b in blocks for h in (b.register_forward_pre_hook(first_input),
                                         b.register_forward_hook(lambda *a: hidden.append(a[2])))]
    try:
        with recording(model) if attention else contextlib.nullcontext([]) as weights:
            yield hidden, weights
    finally:
        for h in hooks:
            h.remove()


class Pupil(nn.Module):
    """The student and TinyBERT's W_h, the projection of its hidden states to the teacher's
    width (identity when equal); the Trainer trains both, OUT keeps the student alone."""

    def __init__(self, student: nn.Module, teacher_width: int):
        super().__init__()
        self.student = student
        width = student.config.hidden_size  # type: ignore[union-attr]
        self.project = nn.Linear(width, teacher_width) if width != teacher_width else \
            nn.Identity()


class Distillation:
    """The Trainer's objective: the teacher (kept out of the trained module, in eval mode,
    without gradients) and the pupil on the same batch, scored by `distill_loss`."""

    def __init__(self, teacher: nn.Module, rows: Rows, weights: Weights):
        self.teacher = teacher.eval().requires_grad_(False)
        self.rows = rows
        self.weights = weights

    def __call__(self, pupil: Pupil, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        ids = batch["input_ids"]
        if next(self.teacher.parameters()).device != ids.device:
            self.teacher.to(ids.device)
        with torch.no_grad():
            teacher = self.forward(self.teacher, batch)
        student = self.forward(pupil.student, batch)
        mask = self.rows.inputs(batch)[1]
        return distill_loss(student, teacher, self.rows.targets(batch), pupil.project, mask,
                            self.weights)

    def forward(self, model: nn.Module, batch: Batch) -> Forward:
        with tapped(model, attention=bool(self.weights.attn)) as (hidden, weights):
            output = model(*self.rows.inputs(batch))
        return Forward(self.rows.logits(model, output, batch), [h.flatten(0, -2) for h in hidden],
                       list(weights))


# ------------------------------------------------------------------------ the student


LAYER = re.compile(r"(^|\.)layers\.(\d+)\.")  # a per-layer tensor of a `Layers` stack


def every_other_layer(teacher_layers: int, student_layers: int) -> list[int]:
    """The teacher layer each student layer starts from: i * (N // M), one layer out of two
    when N = 2M (DistilBERT section 3)."""
    if student_layers > teacher_layers:
        raise UserError(f"the student has {student_layers} layers, more than the teacher's "
                        f"{teacher_layers}")
    step = teacher_layers // student_layers
    return [i * step for i in range(student_layers)]


def init_from_teacher(student: nn.Module, teacher: nn.Module) -> list[int] | None:
    """Copy into `student` the teacher's tensors, layer i from teacher layer
    `every_other_layer(...)[i]`, when every student tensor has a teacher tensor of its shape
    there (task heads included); the teacher layers used, or None (the student unchanged)."""
    picks = every_other_layer(teacher.config.num_layers,  # type: ignore[union-attr]
                              student.config.num_layers)  # type: ignore[union-attr]
    source = teacher.state_dict()
    own = student.state_dict()
    names = {k: LAYER.sub(lambda m: f"{m[1]}layers.{picks[int(m[2])]}.", k, count=1)
             for k in own}
    if any(names[k] not in source or source[names[k]].shape != v.shape for k, v in own.items()):
        return None
    student.load_state_dict({k: source[names[k]] for k in own})
    return picks


def check_vocabulary(teacher: nn.Module, teacher_tok: Tokenizer, student: nn.Module,
                     student_tok: Tokenizer, where: str) -> None:
    """Teacher and student must read the same token ids: one tokenizer, one vocabulary size."""
    sizes = (teacher.config.vocab_size, student.config.vocab_size)  # type: ignore[union-attr]
    if fingerprint(teacher_tok) != fingerprint(student_tok) or sizes[0] != sizes[1]:
        raise UserError(f"{where}: its tokenizer or vocabulary ({sizes[1]} tokens) is not the "
                        f"teacher's ({sizes[0]}); teacher and student must share one")


def student_is_dir(args: DistillArgs) -> bool:
    """Whether --student names a model directory (which keeps its own weights)."""
    return args.student is not None and is_checkpoint(args.student)


def student_backbone(args: DistillArgs, teacher: nn.Module, tok: Tokenizer) -> nn.Module:
    """The student's pretraining model: a directory's (its vocabulary checked), the teacher's
    shape with --student-layers, or a preset sized for the teacher's tokenizer."""
    base = backbone_of(teacher)
    if args.student_layers is not None:
        every_other_layer(base.config.num_layers, args.student_layers)  # type: ignore[union-attr]
        return build(dataclasses.replace(base.config, num_layers=args.student_layers))
    assert args.student is not None
    if student_is_dir(args):
        model = backbone_of(load(args.student))
        check_vocabulary(base, tok, model, Tokenizer.load(tokenizer_dir(Path(args.student))),
                         f"--student {args.student}")
        return model
    entry = parse_entry(args.student, "--student")
    if entry.objective or entry.options:
        raise UserError(f"--student {args.student}: a student is PRESET[::FIELD=VALUE...]; it "
                        "learns from the teacher, so a pretraining objective or option "
                        "does not apply")
    sizes = {"vocab_size": base.config.vocab_size,  # type: ignore[union-attr]
             "max_positions": base.config.max_positions}  # type: ignore[union-attr]
    try:
        config = model_config(entry.preset, tok, 0, {**sizes, **entry.overrides})
    except UserError as e:
        raise UserError(f"--student {args.student}: {e}") from None
    model = build(config)
    check_vocabulary(base, tok, model, tok, f"--student {args.student}")
    return model


# ------------------------------------------------------------------------------ checks


def check_args(args: DistillArgs) -> None:
    """One-line refusals of options that cannot go together, before anything is loaded."""
    for option, value in (("--temperature", args.temperature), ("--lr", args.lr),
                          ("--epochs", args.epochs)):
        if value is not None and not (math.isfinite(value) and value > 0):
            raise UserError(f"{option} must be a positive number, not {value}")
    alphas = {f.name: getattr(args, f.name) for f in dataclasses.fields(args)
              if f.name.startswith("alpha_")}
    for name, value in alphas.items():
        if value is not None and not (math.isfinite(value) and value >= 0):
            raise UserError(f"--{name.replace('_', '-')} must be 0 or more, not {value}")
    if (args.student is None) == (args.student_layers is None):
        raise UserError("give --student PRESET|DIR or --student-layers N (one of them)")
    if not Path(args.teacher).is_dir():
        raise UserError(f"--teacher {args.teacher}: no such model directory")


def weights_for(args: DistillArgs, task: bool) -> Weights:
    """The given weights, else the mode's defaults; at least one must be above 0."""
    defaults = TASK_WEIGHTS if task else DISTILBERT_WEIGHTS
    ce, hard, cos = (v if (v := getattr(args, k)) is not None else defaults[k]
                     for k in ("alpha_ce", "alpha_hard", "alpha_cos"))
    w = Weights(args.temperature, ce, hard, cos, args.alpha_hidden, args.alpha_attn)
    if not any((w.ce, w.hard, w.cos, w.hidden, w.attn)):
        raise UserError("every --alpha-* is 0: nothing to learn from")
    return w


def check_mode(args: DistillArgs, task: bool) -> None:
    """Task distillation reads --train (and --eval, --unlabeled), pretraining --corpus."""
    if task:
        if args.train is None:
            raise UserError(f"--teacher {args.teacher} is fine-tuned: task distillation needs "
                            "--train FILE")
        if args.corpus:
            raise UserError(f"--corpus is for a pretrained teacher; {args.teacher} is "
                            "fine-tuned (give --train, --unlabeled)")
        return
    given = [n for n in ("train", "eval", "unlabeled") if getattr(args, n) is not None]
    if given:
        raise UserError(f"--{given[0]} is for a fine-tuned teacher; {args.teacher} is "
                        "pretrained (give --corpus)")
    if not args.corpus:
        raise UserError(f"--teacher {args.teacher} is pretrained: pretraining distillation "
                        "needs --corpus FILES")


def check_pair(teacher: nn.Module, student: nn.Module, w: Weights, where: str) -> None:
    """Both are BERT-layout encoders; the attention term needs one head count; soft MLM
    targets need the teacher's head."""
    for model in (teacher, student):
        encoder_blocks(model)
    heads = (backbone_of(teacher).config.num_heads,  # type: ignore[union-attr]
             backbone_of(student).config.num_heads)  # type: ignore[union-attr]
    if w.attn and heads[0] != heads[1]:
        raise UserError(f"--alpha-attn: the student has {heads[1]} heads, the teacher "
                        f"{heads[0]}; attention maps are compared head by head")
    fresh = [n for n in getattr(teacher, "fresh_weights", ()) if n.startswith("mlm.")]
    if w.ce and fresh:
        raise UserError(f"{where}: the teacher has no masked-LM head weights, so no soft MLM "
                        "targets; give --alpha-ce 0 (hidden-state alignment alone)")


# ------------------------------------------------------------------------------- jobs


def distill(args: DistillArgs, overwrite: bool = False) -> dict[str, Any]:
    """Distill `args.teacher` into a student in `args.out`; returns the student's eval
    metrics (task distillation with --eval), else what was trained."""
    check_args(args)
    teacher_dir = Path(args.teacher)
    task = is_native(teacher_dir) and bool(read_description(teacher_dir).get("task"))
    check_mode(args, task)
    weights = weights_for(args, task)
    refuse_inside(args.out, teacher_dir, args.train, args.eval, args.unlabeled, *args.corpus)
    existing = claim(args.out, "distill", overwrite=overwrite)
    with written_in_place(args.out, "distill", replace=existing):
        run = task_distill if task else pretrain_distill
        seed_all(args.seed)  # the student's fresh weights (heads, W_h) depend on the seed alone
        result = run(args, weights)
        write_json(args.out / DISTILL_RECORD, {**dataclasses.asdict(args), **result})
    return result


def task_distill(args: DistillArgs, w: Weights) -> dict[str, Any]:
    """Task distillation: OUT is a fine-tuned classifier, as `plmkit finetune` writes one."""
    f = load_finetuned(Path(args.teacher))
    if not isinstance(f.task, ClassifyTask) or f.task.labels is None:
        raise UserError(f"--teacher {args.teacher}: task distillation takes a classifier "
                        "(plmkit finetune --task classify, not regression)")
    backbone = student_backbone(args, f.model, f.tokenizer)
    student = f.task.build_model(backbone)
    picks = None if student_is_dir(args) else init_from_teacher(student, f.model)
    check_pair(f.model, student, w, f"--teacher {args.teacher}")
    options = dataclasses.replace(
        f.options, epochs=args.epochs, batch_size=args.batch_size, seed=args.seed,
        max_seq_len=args.max_seq_len or f.options.max_seq_len, bf16=args.bf16,
        progress=args.progress, lr=args.lr or default_lr(backbone.config), eval_every=0,
        tensorboard=False)
    data = task_batches(f, args, options)
    if args.eval is not None:
        f.task.read_eval(args.eval)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    f.tokenizer.save(out / TOKENIZER_DIR)
    write_json(out / FINETUNE_CONFIG, dataclasses.asdict(options))
    evaluator = None
    if args.eval is not None:
        def evaluator(pupil: nn.Module) -> dict[str, float]:
            return f.task.evaluate(pupil.student, f.tokenizer, args.eval, options)  # type: ignore
    steps = max(1, round(len(data) * options.epochs))
    config = task_train_config(options, steps, len(data), out,
                               f.task.main_metric if args.eval is not None else None)
    trainer, _ = _train(student, f.model, LabelRows(), w, data, config, evaluator)
    best = best_scores(trainer, out, args.eval)
    return {"mode": "task", "teacher_layers": picks, "examples": len(data.examples),
            "steps": steps, **best}


def task_batches(f: Finetuned, args: DistillArgs, options: Any) -> ShuffledBatches:
    """The training records (hard labels where given) and the --unlabeled text, as
    classification features; a missing label is `IGNORE`."""
    task = f.task
    assert isinstance(task, ClassifyTask) and args.train is not None
    examples = task.read(args.train, need_label=False, columns=options.columns())
    if args.unlabeled is not None:
        extra = task.read(args.unlabeled, need_label=False, text_lines=True,
                          columns=options.columns())
        examples += [dataclasses.replace(e, label=None) for e in extra]
    features = task.features(f.tokenizer, examples, options)
    for feature in features:
        feature.setdefault("labels", IGNORE)
    return ShuffledBatches(features, options.batch_size, pad_collate(f.tokenizer.pad_id),
                           options.seed)


def pretrain_distill(args: DistillArgs, w: Weights) -> dict[str, Any]:
    """Pretraining distillation on masked-LM batches of --corpus: OUT is a pretrained model
    with the teacher's tokenizer."""
    teacher_dir = Path(args.teacher)
    teacher = load(teacher_dir)
    if not hasattr(teacher, "mlm_logits"):
        raise UserError(f"--teacher {teacher_dir}: a {teacher.config.family} model; "  # type: ignore
                        "pretraining distillation takes a BERT-layout encoder with an MLM head")
    tok = Tokenizer.load(tokenizer_dir(teacher_dir))
    student = student_backbone(args, teacher, tok)
    picks = None if student_is_dir(args) else init_from_teacher(student, teacher)
    check_pair(teacher, student, w, f"--teacher {teacher_dir}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tok.save(out / TOKENIZER_DIR)
    corpus = prepare(args.corpus, tok, out / "data")
    seq_len = args.max_seq_len or PRETRAIN_SEQ_LEN
    data = MaskedLM().batches(corpus, tok, DataOptions(batch_size=args.batch_size), seq_len,
                              args.seed)
    config = TrainConfig(
        steps=args.steps, out_dir=out, lr=args.lr or DISTILBERT_LR,
        warmup_steps=round(args.steps * DISTILBERT_WARMUP), bf16=args.bf16, seed=args.seed,
        log_every=max(1, min(50, args.steps // 10)), eval_every=0, save_every=0,
        checkpoints=False, progress=args.progress)
    _, logs = _train(student, teacher, MaskedRows(), w, data, config, None)
    return {"mode": "pretraining", "teacher_layers": picks, "steps": args.steps,
            **(logs[-1] if logs else {})}


def _train(student: nn.Module, teacher: nn.Module, rows: Rows, w: Weights, data: Any,
           config: TrainConfig, evaluator: Any) -> tuple[Trainer, list[dict[str, Any]]]:
    """Train the pupil of `student` against `teacher` (OUT gets the student alone); the
    trainer and its logged records."""
    width = backbone_of(teacher).config.hidden_size  # type: ignore[union-attr]
    trainer = Trainer(Pupil(student, width), Distillation(teacher, rows, w), data, config,
                      evaluator=evaluator,
                      save_model=lambda pupil, out: save_model(pupil.student, out))
    return trainer, trainer.train()
