"""Decoding tokens/s of a plmkit Transformer: greedy and beam search with the key/value cache
against recomputing the whole prefix at every step (`use_cache=False`), and transformers'
`MarianMTModel.generate` on the same weights (`plmkit.bench.suite.marian_twin`) for reference; all
interleaved in one process, medians of `--reps`.

    .venv/bin/python benchmarks/transformer_decoding.py --model runs/en-es \
        --pairs data/bible-en-es/test.tsv --sentences 64 --reps 3

tokens/s counts generated target tokens (</s> included). plmkit's cached and recomputing
searches return the same tokens (`tests/test_generate.py`); transformers' lengths can differ a
little (one `max_new_tokens` per batch instead of plmkit's input + 50 per sentence).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch import Tensor

from plmkit.bench.suite import marian_twin
from plmkit.data.parallel import read_pairs
from plmkit.deploy.generate import ALPHA, MAX_EXTRA, beam_search, greedy
from plmkit.jobs.seq2seq import _padded, load_translator

Run = Callable[[], int]  # decodes every batch, returns the number of generated tokens


def plmkit_run(model: torch.nn.Module, batches: list[tuple[Tensor, Tensor]], beam: int,
               use_cache: bool) -> Run:
    def run() -> int:
        found = []
        for ids, mask in batches:
            if beam == 1:
                found += greedy(model, ids, mask, use_cache=use_cache)
            else:
                found += beam_search(model, ids, mask, beam=beam, use_cache=use_cache)
        return sum(len(h.tokens) for h in found)

    return run


def hf_run(marian: torch.nn.Module, batches: list[tuple[Tensor, Tensor]], beam: int,
           pad: int) -> Run:
    def run() -> int:
        tokens = 0
        for ids, mask in batches:
            penalty = {"length_penalty": ALPHA} if beam > 1 else {}  # beam search only
            out = marian.generate(input_ids=ids, attention_mask=mask, num_beams=beam,
                                  max_new_tokens=ids.shape[1] + MAX_EXTRA, do_sample=False,
                                  **penalty)  # (B, 1 + T): <s> first
            tokens += int((out[:, 1:] != pad).sum())
        return tokens

    return run


@torch.no_grad()
def measure(runs: dict[str, Run], reps: int) -> dict[str, tuple[float, int]]:
    """name -> (median tokens/s, tokens) over `reps` interleaved rounds after a warm-up."""
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    tokens = {name: run() for name, run in runs.items()}
    for _ in range(reps):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            seconds[name].append(time.perf_counter() - start)
    return {name: (tokens[name] / statistics.median(s), tokens[name])
            for name, s in seconds.items()}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True, help="a `plmkit pretrain --objective seq2seq` run")
    p.add_argument("--pairs", required=True, help="tsv / jsonl pairs; the sources are decoded")
    p.add_argument("--sentences", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--beams", default="1,4")
    p.add_argument("--reps", type=int, default=3)
    args = p.parse_args()
    model, tok = load_translator(args.model)
    marian = marian_twin(model).marian.eval()
    sources = sorted((s for s, _ in read_pairs([args.pairs])[: args.sentences]), key=len)
    rows = [[*ids, tok.sep_id] for ids in tok.encode_batch(sources)]
    batches = [_padded(rows[i:i + args.batch_size], tok.pad_id, torch.device("cpu"))
               for i in range(0, len(rows), args.batch_size)]
    print(f"{args.model}: {len(rows)} sentences, batches of {args.batch_size}, "
          f"{torch.get_num_threads()} threads, medians of {args.reps}")
    print(f"{'search':<8}{'plmkit cache':>14}{'recompute':>11}{'speed-up':>10}{'hf generate':>13}")
    for beam in (int(b) for b in args.beams.split(",")):
        got = measure({"cache": plmkit_run(model, batches, beam, True),
                       "recompute": plmkit_run(model, batches, beam, False),
                       "hf": hf_run(marian, batches, beam, tok.pad_id)}, args.reps)
        name = "greedy" if beam == 1 else f"beam {beam}"
        print(f"{name:<8}{got['cache'][0]:>14.0f}{got['recompute'][0]:>11.0f}"
              f"{got['cache'][0] / got['recompute'][0]:>9.2f}x{got['hf'][0]:>13.0f}"
              f"   tokens: {got['cache'][1]} / {got['recompute'][1]} / {got['hf'][1]}")


if __name__ == "__main__":
    main()
