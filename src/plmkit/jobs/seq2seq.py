"""Sentence-pair runs beyond the shared pipeline: the Transformer's warmup rule, the BLEU /
chrF evaluation of held-out pairs (sacrebleu), `translate` (`plmkit translate`) and `chat`
(`plmkit chat`). Training itself is `plmkit pretrain --objective seq2seq` on a corpus of
pairs (`plmkit.jobs.pretrain`).

Training follows "Attention Is All You Need" (Vaswani et al. 2017, section 5): a joint byte-level
BPE vocabulary learned on both sides, token-count batches, Adam(0.9, 0.98, 1e-9) without weight
decay or gradient clipping, lr = d^-0.5 * min(n^-0.5, n * warmup^-1.5) with warmup 4000 (times
--lr, 1 by default), label smoothing 0.1. Decoding: beam 4, length penalty 0.6, up to input +
50 tokens.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TextIO

import sacrebleu
import torch
from torch import nn

from plmkit.data.parallel import Pair, read_pairs
from plmkit.deploy.console import prompted_lines
from plmkit.deploy.generate import BEAM, beam_search, greedy, warn_blank
from plmkit.errors import UserError
from plmkit.interop.native import TOKENIZER_DIR, load_model
from plmkit.interop.start import is_checkpoint
from plmkit.jobs.options import PretrainArgs, default_warmup
from plmkit.tokenizers import Tokenizer

WARMUP = 4000  # the paper's, for its 100k steps
EVAL_PAIRS = 100  # held-out pairs decoded (greedy) for BLEU / chrF at each evaluation


def seq2seq_warmup(args: PretrainArgs) -> int:
    """--warmup, else from a checkpoint 6% of the steps, else the paper's 4000 steps or a tenth
    of a shorter run (4000 of 100k steps is 4%; a 100-step run must leave warmup)."""
    if args.warmup is not None or is_checkpoint(args.model):
        return max(1, default_warmup(args))
    return max(1, min(WARMUP, args.steps // 10))


def bleu_evaluator(tok: Tokenizer, pairs: Sequence[Pair]) -> Callable[[nn.Module], dict]:
    """model -> {"bleu", "chrf"} of greedy translations of the first `EVAL_PAIRS` pairs."""
    pairs = pairs[:EVAL_PAIRS]

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
    """The model of a seq2seq run directory and its tokenizer (`DIR/tokenizer`)."""
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
    for line in prompted_lines(stdin, stdout):
        stdout.write(translate_with(model, tok, [line], beam)[0] + "\n")
