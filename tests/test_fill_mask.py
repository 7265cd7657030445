"""fill-mask answers honestly (issue 26, item 6): a transformers checkpoint without masked-LM
head weights (the real all-MiniLM-L6-v2) is refused in one line instead of filling masks with
a randomly initialised head; one that holds them is used as it is."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

import plmkit
from plmkit.cli import main
from plmkit.deploy.fill_mask import fill_mask
from plmkit.errors import UserError
from plmkit.interop.native import tokenizer_dir
from plmkit.tokenizers import Tokenizer
from pretrained_tiny import pretrained_bert_dir

pytestmark = pytest.mark.usefixtures("one_thread")


def test_minilm_without_an_mlm_head_is_one_line_and_no_warning(
        minilm_dir: Path, capsys: pytest.CaptureFixture) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = main(["fill-mask", "--model", str(minilm_dir), "--text", "the cat sat on the "
                     "[MASK]"])
    out, err = capsys.readouterr()
    assert code == 2 and out == "" and not caught
    assert err.count("\n") == 1
    assert err.startswith(f"plmkit: error: {minilm_dir}: the checkpoint has no masked-LM head "
                          "weights (cls.predictions.")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = plmkit.load(minilm_dir)
    assert {n for n in model.fresh_weights if n.startswith("mlm.")}  # what load_hf recorded
    with pytest.raises(UserError, match="no masked-LM head weights"):
        fill_mask(model, Tokenizer.load(minilm_dir), ["the cat sat on the [MASK]"])


def test_a_checkpoint_holding_its_mlm_head_fills_masks(
        tmp_path_factory: pytest.TempPathFactory, tweets: list[str], tmp_path: Path) -> None:
    run = pretrained_bert_dir(tmp_path_factory, tweets)  # bert-tiny pretrained on real tweets
    tok = Tokenizer.load(tokenizer_dir(run))
    plmkit.save_hf(plmkit.load(run), tmp_path / "hf")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every weight is in the export: nothing to warn of
        exported = plmkit.load(tmp_path / "hf")
    assert not {n for n in exported.fresh_weights if n.startswith("mlm.")}
    texts = ["thank you so [MASK] for the help", "good [MASK] everyone"]
    native = fill_mask(plmkit.load(run), tok, texts, top_k=3)
    assert fill_mask(exported, tok, texts, top_k=3) == native
    assert native[0][0][0]["token"] != tok.specials.mask
