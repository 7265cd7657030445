"""Translation end to end: `train_seq2seq` (`plmkit pretrain --objective seq2seq` on sentence
pairs), `translate` (`plmkit translate`), `chat` (`plmkit chat`) and BLEU / chrF with sacrebleu.

Training follows "Attention Is All You Need" (Vaswani et al. 2017, section 5): a joint byte-level
BPE vocabulary learned on both sides, token-count batches, Adam(0.9, 0.98, 1e-9) without weight
decay or gradient clipping, lr = d^-0.5 * min(n^-0.5, n * warmup^-1.5) with warmup 4000 (times
`lr_scale`), label smoothing 0.1. Decoding: beam 4, length penalty 0.6, up to input + 50 tokens.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

import sacrebleu
import torch
from torch import nn

from plmkit.data.options import DataOptions
from plmkit.data.parallel import Pair, read_pairs
from plmkit.deploy.generate import BEAM, MAX_EXTRA, beam_search, greedy, warn_blank
from plmkit.errors import UserError
from plmkit.interop.native import load_model
from plmkit.jobs.pretrain import (
    TOKENIZER_DIR,
    PretrainArgs,
    base_config,
    checkpoint_tokenizer,
    default_warmup,
    initial_model,
    is_checkpoint,
    tokenizer_vocab_size,
    write_record,
)
from plmkit.models import get_family, preset_config
from plmkit.objectives.seq2seq import Seq2Seq
from plmkit.tokenizers import Tokenizer, train_tokenizer
from plmkit.training import TrainConfig, Trainer
from plmkit.training.checkpoint import seed_all
from plmkit.training.optim import inverse_sqrt

WARMUP = 4000  # the paper's, for its 100k steps


def seq2seq_warmup(args: PretrainArgs) -> int:
    """--warmup, else from a checkpoint 6% of the steps, else the paper's 4000 steps or a tenth
    of a shorter run (4000 of 100k steps is 4%; a 100-step run must leave warmup)."""
    if args.warmup is not None or is_checkpoint(args.model):
        return max(1, default_warmup(args))
    return max(1, min(WARMUP, args.steps // 10))
EVAL_PAIRS = 100  # held-out pairs decoded (greedy) for BLEU / chrF at each evaluation


def seq2seq_tokenizer(args: PretrainArgs, pairs: Sequence[Pair]) -> Tokenizer:
    """The run's tokenizer: the saved one on resume, the given one, or a joint byte-level BPE
    (cased) trained now on both sides of the pairs; saved in `args.out / "tokenizer"`."""
    saved = args.out / TOKENIZER_DIR
    if args.resume and saved.is_dir():
        return Tokenizer.load(saved)
    if is_checkpoint(args.model):
        return checkpoint_tokenizer(args, saved)
    if args.tokenizer is not None:
        tok = Tokenizer.load(args.tokenizer)
    else:
        texts = (text for pair in pairs for text in pair)
        tok = train_tokenizer("bpe", texts, tokenizer_vocab_size(args), lowercase=False)
        print(f"trained a joint bpe tokenizer of {tok.vocab_size} tokens on the pairs")
    tok.save(saved)
    return tok


def seq2seq_config(args: PretrainArgs, tok: Tokenizer) -> Any:
    """The preset's config sized for the tokenizer and the run's lengths; a checkpoint's as it
    is (its positions must hold the run's)."""
    base = base_config(args)
    longest = args.seq_len + MAX_EXTRA
    if is_checkpoint(args.model):
        if base.max_positions < longest:
            raise UserError(f"--seq-len {args.seq_len}: --model {args.model} has "
                            f"{base.max_positions} positions, translating needs {longest}")
        return base
    return preset_config(args.model, vocab_size=tok.vocab_size, pad_token_id=tok.pad_id,
                         bos_token_id=tok.cls_id, eos_token_id=tok.sep_id,
                         max_positions=max(base.max_positions, longest))


def seq2seq_trainer(args: PretrainArgs, lr_scale: float = 1.0) -> Trainer:
    """A trainer of `args.model` (an encoder-decoder preset) on the pairs of `args.corpus`;
    `args.lr` is not used: the schedule gives the learning rate, times `lr_scale`."""
    family = get_family(base_config(args).family)
    if family.default_objective != "seq2seq":
        raise UserError(f"--objective seq2seq needs an encoder-decoder model, not {args.model}")
    pairs = read_pairs(args.corpus)
    tok = seq2seq_tokenizer(args, pairs)
    config = seq2seq_config(args, tok)
    objective = Seq2Seq()
    options = DataOptions(batch_size=args.batch_size)
    train = objective.batches(pairs, tok, options, args.seq_len, args.seed)
    heldout, evaluator = None, None
    if args.heldout:
        held = read_pairs(args.heldout)
        heldout = objective.batches(held, tok, options, args.seq_len, args.seed)
        heldout.shuffle = False
        evaluator = bleu_evaluator(tok, held[:EVAL_PAIRS])
    warmup = seq2seq_warmup(args)
    train_config = TrainConfig(
        steps=args.steps, out_dir=args.out, lr=lr_scale, clip_norm=None, seed=args.seed,
        log_every=args.log_every, eval_every=args.eval_every, eval_batches=None,
        save_every=args.save_every, bf16=args.bf16, progress=args.progress,
        tensorboard=args.tensorboard,
        grad_accum=args.grad_accum, **family.optim_defaults,
    )
    seed_all(args.seed)
    trainer = Trainer(initial_model(args, config, True), objective, train, train_config,
                      eval_data=heldout,
                      schedule=inverse_sqrt(config.hidden_size, warmup), evaluator=evaluator)
    write_record(args, trainer)
    return trainer


def bleu_evaluator(tok: Tokenizer, pairs: Sequence[Pair]) -> Callable[[nn.Module], dict]:
    """model -> {"bleu", "chrf"} of greedy translations of `pairs`."""

    def evaluate(model: nn.Module) -> dict[str, float]:
        hypotheses = translate_with(model, tok, [s for s, _ in pairs], beam=1)
        return score(hypotheses, [t for _, t in pairs])

    return evaluate


def score(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Corpus BLEU and chrF (sacrebleu's defaults: 13a tokenization, chrF with n=6, beta=2)."""
    refs = [list(references)]
    return {"bleu": sacrebleu.corpus_bleu(list(hypotheses), refs).score,
            "chrf": sacrebleu.corpus_chrf(list(hypotheses), refs).score}


def load_translator(model_dir: Path) -> tuple[nn.Module, Tokenizer]:
    """The model of a `train_seq2seq` run directory and its tokenizer (`DIR/tokenizer`)."""
    model_dir = Path(model_dir)
    if not (model_dir / TOKENIZER_DIR).is_dir():
        raise UserError(f"{model_dir}: no {TOKENIZER_DIR}/ (not a seq2seq run directory)")
    model = load_model(model_dir)
    if not hasattr(model, "decode"):
        raise UserError(f"{model_dir}: a {model.config.family} model cannot translate")
    return model.eval(), Tokenizer.load(model_dir / TOKENIZER_DIR)


def translate(model_dir: Path, lines: Sequence[str], beam: int = BEAM,
              batch_size: int = 32) -> list[str]:
    """One translation per line, beam search (beam 1: greedy)."""
    model, tok = load_translator(model_dir)
    return translate_with(model, tok, lines, beam, batch_size)


@torch.no_grad()
def translate_with(model: nn.Module, tok: Tokenizer, lines: Sequence[str], beam: int = BEAM,
                   batch_size: int = 32) -> list[str]:
    """Translate `lines` with a loaded model, in batches of similar length."""
    was_training = model.training
    model.eval()
    longest = model.config.max_positions - 1
    sources = [[*ids[:longest], tok.sep_id] for ids in tok.encode_batch(list(lines))]
    order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
    out: list[str] = [""] * len(sources)
    blank = 0  # outputs that start with end-of-sequence
    device = next(model.parameters()).device
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        ids, mask = _padded([sources[i] for i in chunk], tok.pad_id, device)
        found = (greedy(model, ids, mask) if beam == 1
                 else beam_search(model, ids, mask, beam=beam))
        for i, hyp in zip(chunk, found, strict=True):
            out[i] = tok.decode(hyp.tokens).strip()
            blank += hyp.tokens[:1] == [tok.sep_id]
    model.train(was_training)
    warn_blank(blank, len(out))
    return out


def _padded(rows: list[list[int]], pad: int, device: torch.device
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, S) right-padded ids and their 1/0 mask."""
    width = max(map(len, rows))
    ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows], device=device)
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], device=device)
    return ids, mask


def evaluate_translation(model_dir: Path, pairs_file: Path, beam: int = BEAM,
                         limit: int | None = None) -> dict[str, float]:
    """BLEU and chrF on a pairs file, and those of copying the source (a floor to beat)."""
    pairs = read_pairs([pairs_file])[:limit]
    sources, references = [s for s, _ in pairs], [t for _, t in pairs]
    metrics = score(translate(model_dir, sources, beam), references)
    copy = score(sources, references)
    return {**metrics, "copy_bleu": copy["bleu"], "copy_chrf": copy["chrf"], "pairs": len(pairs)}


def chat(model_dir: Path, stdin: TextIO = sys.stdin, stdout: TextIO = sys.stdout,
         beam: int = BEAM) -> None:
    """Interactive: read a line, answer with the model's output, until end of input."""
    model, tok = load_translator(model_dir)
    while True:
        stdout.write("> ")
        stdout.flush()
        line = stdin.readline()
        if not line:
            break
        if line.strip():
            stdout.write(translate_with(model, tok, [line.strip()], beam)[0] + "\n")
