"""Transformer-XL causal LM on real text: evaluation with memory against sliding windows."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

import plmkit
from plmkit.jobs.pretrain import PretrainArgs, model_config, model_needs, pretrain
from plmkit.objectives import get_objective
from plmkit.objectives.clm import CausalLM, evaluate_sliding, evaluate_with_memory
from plmkit.tokenizers import Tokenizer


@pytest.mark.slow
def test_transfo_xl_memory_evaluation_computes_far_less_at_no_worse_perplexity(
        tweets: list[str], tmp_path: Path) -> None:
    corpus, heldout = tmp_path / "train.txt", tmp_path / "heldout.txt"
    corpus.write_text("\n".join(tweets[:-150]) + "\n")
    heldout.write_text("\n".join(tweets[-150:]) + "\n")
    args = PretrainArgs(model="transfo-xl-tiny", corpus=[corpus], out=tmp_path / "run",
                        vocab_size=2000, batch_size=8, seq_len=32, lr=2e-3, steps=100,
                        warmup=10, log_every=20, eval_every=1000, save_every=100,
                        progress=False)
    records = pretrain(args)
    assert records[-1]["clm_loss"] < records[0]["clm_loss"] - 0.5
    model = plmkit.load(args.out)
    assert model.config.mem_len == 32
    tok = Tokenizer.load(args.out / "tokenizer")
    text = torch.tensor([i for line in heldout.read_text().splitlines()
                         for i in tok.encode(line)][:1000])
    sliding = evaluate_sliding(model, text, context=32)
    memory = evaluate_with_memory(model, text, seq_len=32)
    assert memory.tokens == sliding.tokens == len(text) - 1
    # each prediction sees 32..63 tokens with memory, exactly 32 when sliding
    assert memory.perplexity <= sliding.perplexity * 1.02
    # memory computes each position once; sliding recomputes a 32-token window per prediction
    assert memory.positions == len(text) - 1
    assert sliding.positions == 32 + (len(text) - 1 - 32) * 32
    # the steady state: every prediction from a full window, or with 32 cached states (the
    # segments from position 32 on)
    assert sliding.steady_tokens == len(text) - 1 - 32
    assert memory.steady_tokens == len(text) - 1 - 32
    assert 0 < sliding.steady_seconds < sliding.seconds
    assert 0 < memory.steady_seconds < memory.seconds
    short = evaluate_with_memory(model, text[:20], seq_len=32)  # never sees 32 cached states
    assert short.steady_tokens == 0 and math.isnan(short.steady_tokens_per_s)
    # the speed itself is measured in benchmarks/transfo_xl_memory.py (docs/compare.md, study 5)


def test_clm_needs_a_causal_model() -> None:
    model = plmkit.build(plmkit.preset_config("xlnet-tiny", vocab_size=50))
    batch = {"input_ids": torch.zeros(2, 4, dtype=torch.long), "mem_key": torch.zeros(3)}
    with pytest.raises(plmkit.UserError, match="causal"):
        CausalLM()(model, batch)


def test_transfo_xl_caches_whole_segments_and_xlnet_the_reused_half() -> None:
    """The pipeline sizes XLNet's memory to the half of each segment that the next one reuses
    (the `plm` objective's `model_fields`); Transformer-XL's `clm` caches whole segments, the
    states just before the next one (Dai et al. 2019, section 3.2)."""
    tok = SimpleNamespace(vocab_size=100, pad_id=1, cls_id=2, sep_id=3)

    def config(preset: str, objective: str) -> Any:
        return model_config(preset, tok, 64, needs=model_needs(get_objective(objective), 64))

    assert config("transfo-xl-tiny", "clm").reuse_len is None
    assert config("xlnet-tiny", "plm").reuse_len == 32
