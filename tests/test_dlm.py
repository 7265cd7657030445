"""ERNIE's dialogue language model on the chatterbot-corpus dialogues: instances (roles, fakes)
and real / fake accuracy above chance after a short pretraining run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from plmkit.data.builders import build_dataset
from plmkit.data.dialogue import chatterbot_dialogues, read_dialogues
from plmkit.data.masking import MaskingSpec
from plmkit.errors import UserError
from plmkit.jobs.pretrain import PretrainArgs, trainer_for
from plmkit.objectives.dlm import DialogueStream
from plmkit.tokenizers import Tokenizer, train_tokenizer


@pytest.fixture(scope="module")
def dialogue_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dialogues")
    build_dataset("dialogues", out)
    return out


@pytest.fixture(scope="module")
def tok(dialogue_dir: Path) -> Tokenizer:
    return train_tokenizer("char", (dialogue_dir / "train.txt").read_text().splitlines(), 4000)


def test_chatterbot_has_chinese_and_english_dialogues(dialogue_dir: Path) -> None:
    dialogues = chatterbot_dialogues()
    text = "".join(t for d in dialogues for t in d)
    assert len(dialogues) > 2000 and all(len(d) >= 2 for d in dialogues)
    assert "你好" in text and "Hello" in text
    assert len(read_dialogues([dialogue_dir / "train.txt"])) > 0.9 * len(dialogues)


def test_instances_alternate_roles_and_fakes_replace_one_turn(tok: Tokenizer,
                                                              dialogue_dir: Path) -> None:
    texts = read_dialogues([dialogue_dir / "train.txt"])
    dialogues = [[np.array(tok.encode(t)) for t in d] for d in texts]
    spec = MaskingSpec.from_vocab(tok, max_predictions=10)
    stream = DialogueStream(dialogues, tok, 64, spec, seed=3)
    fakes = agree = 0
    for index in range(300):
        x = stream.instance(0, index)
        ids = x["input_ids"].copy()
        n = int(x["input_mask"].sum())
        keep = x["masked_lm_weights"] > 0
        ids[x["masked_lm_positions"][keep]] = x["masked_lm_ids"][keep]  # undo the masking
        ends = np.flatnonzero(ids[:n] == tok.sep_id)  # (K,) one [SEP] after each turn
        turns = [ids[a + 1:b].tolist() for a, b in zip([0, *ends[:-1]], ends, strict=True)]
        roles = x["segment_ids"][ends]  # (K,)
        assert len(turns) >= 2 and (np.diff(roles) != 0).all()  # query, response, query...
        originals = [t.tolist() for t in dialogues[index]]
        best = max(_match(turns, originals, s) for s in range(int(roles[0]), len(originals), 2))
        assert best >= len(turns) - 1  # real: every turn; fake: all but one
        agree += len(turns) - best == int(x["next_sentence_labels"])
        fakes += int(x["next_sentence_labels"])
    assert 0.4 < fakes / 300 < 0.6
    assert agree >= 0.97 * 300  # a few random turns equal the one they replace ("你好")


def _match(turns: list[list[int]], originals: list[list[int]], first: int) -> int:
    """How many of `turns` equal (a prefix of, when cut) the originals from turn `first`."""
    window = originals[first:first + len(turns)]
    return sum((len(t) > 0 and o[:len(t)] == t) or t == o
               for t, o in zip(turns, window, strict=False))


def test_dlm_tells_real_from_fake_above_chance(dialogue_dir: Path, tmp_path: Path) -> None:
    args = PretrainArgs(model="ernie-tiny", objective="dlm", corpus=[dialogue_dir / "train.txt"],
                        heldout=[dialogue_dir / "heldout.txt"], out=tmp_path / "run",
                        steps=150, vocab_size=4000, batch_size=32, seq_len=48, lr=2e-3,
                        log_every=10, eval_every=150, eval_batches=8, save_every=0,
                        progress=False)
    trainer_for(args).train()
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    assert records[-1]["step"] == 150
    assert records[-1]["eval_dlm_accuracy"] > 0.6, records[-1]  # 256 held-out dialogues
    assert records[-1]["mlm_loss"] < records[0]["mlm_loss"] - 1.0


def test_dialogue_files_need_dialogues(tmp_path: Path) -> None:
    path = tmp_path / "one.txt"
    path.write_text("just one line\n\nand another\n")
    with pytest.raises(UserError, match=r"one\.txt"):
        read_dialogues([path])
    with pytest.raises(UserError, match=r"missing\.txt: no such dialogue file"):
        read_dialogues([tmp_path / "missing.txt"])
