"""One sentence head for every BERT-layout model: NSP and SOP on any of them (the NSP-vs-SOP
ablation on one architecture), saved, loaded and exported under the family's HF name."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import transformers

import plmkit
import plmkit.objectives as objectives
from plmkit.data.options import DataOptions
from plmkit.data.shards import ShardedCorpus, prepare_corpus
from plmkit.jobs.pretrain import PretrainArgs, pretrain
from plmkit.nn.heads import SentenceHead
from plmkit.tokenizers import Tokenizer, train_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")
SMALL = {"hidden_size": 32, "num_heads": 2, "intermediate_size": 64, "num_layers": 2}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory,
             tweets: list[str]) -> tuple[Path, ShardedCorpus, Path]:
    """Real tweets in documents of 8, a WordPiece vocabulary saved to disk, the shards."""
    root = tmp_path_factory.mktemp("heads")
    path = root / "train.txt"
    path.write_text("\n\n".join("\n".join(tweets[i:i + 8]) for i in range(0, 800, 8)) + "\n")
    tok = train_tokenizer("wordpiece", tweets[:800], 1000)
    tok.save(root / "tok")
    return path, prepare_corpus([path], tok, root / "shards", fingerprint="wp-1000"), root / "tok"


@pytest.mark.parametrize("objective", ["mlm+nsp", "mlm+sop"])
@pytest.mark.parametrize("preset", ["bert-tiny", "albert-tiny", "ernie-tiny", "roberta-tiny"])
def test_every_bert_layout_model_trains_either_sentence_task(prepared, preset: str,
                                                             objective: str) -> None:
    _, corpus, tok_dir = prepared
    tok = Tokenizer.load(tok_dir)
    task = objectives.get_objective(objective)
    needs = getattr(task, "model_needs", {})
    base = plmkit.preset_config(preset)
    fields = {k: v for k, v in {**SMALL, **needs}.items() if hasattr(base, k)}
    if preset == "albert-tiny":
        fields["embedding_size"] = 16
    model = plmkit.build(plmkit.preset_config(preset, vocab_size=tok.vocab_size,
                                              pad_token_id=tok.pad_id, **fields))
    batch = next(iter(task.batches(corpus, tok, DataOptions(batch_size=8), 64, seed=0)))
    loss, metrics = task(model, batch)
    name = objective.split("+")[1]
    assert torch.isfinite(loss) and {f"{name}_loss", f"{name}_accuracy"} <= set(metrics)
    loss.backward()
    grad = sentence_head(model).weight.grad
    assert grad is not None and grad.abs().sum() > 0


def sentence_head(model: torch.nn.Module) -> SentenceHead:
    (head,) = [m for m in model.modules() if isinstance(m, SentenceHead)]
    return head


def test_electra_refuses_a_sentence_task_in_one_line(prepared) -> None:
    _, corpus, tok_dir = prepared
    tok = Tokenizer.load(tok_dir)
    task = objectives.get_objective("mlm+nsp")
    model = plmkit.build(plmkit.preset_config("electra-tiny", vocab_size=tok.vocab_size))
    batch = next(iter(task.batches(corpus, tok, DataOptions(batch_size=4), 64, seed=0)))
    with pytest.raises(plmkit.UserError, match="electra models have no sentence head"):
        task(model, batch)


def run(prepared, tmp_path: Path, preset: str, objective: str) -> Path:
    path, _, tok_dir = prepared
    out = tmp_path / f"{preset}-{objective}"
    pretrain(PretrainArgs(model=preset, objective=objective, corpus=[path], out=out,
                          tokenizer=tok_dir, steps=2, batch_size=4, seq_len=64, progress=False,
                          save_every=2, log_every=1, eval_every=0))
    return out


def hf_inputs(vocab: int) -> dict[str, torch.Tensor]:
    ids = torch.randint(5, vocab, (2, 12))
    types = torch.zeros_like(ids)
    types[:, 6:] = 1
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": types}


@pytest.mark.parametrize(("preset", "objective", "hf_class", "hf_logits"), [
    ("albert-tiny", "mlm+nsp", transformers.AlbertForPreTraining, "sop_logits"),
    ("bert-tiny", "mlm+sop", transformers.BertForPreTraining, "seq_relationship_logits"),
])
def test_pretrain_save_load_and_export_the_other_sentence_head(
        prepared, tmp_path: Path, preset: str, objective: str, hf_class: type,
        hf_logits: str) -> None:
    out = run(prepared, tmp_path, preset, objective)
    ours = plmkit.load(out).eval()
    records = [line for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 2 and f'"{objective[4:]}_loss"' in records[-1]
    plmkit.save_hf(ours, tmp_path / "hf")
    theirs, info = hf_class.from_pretrained(tmp_path / "hf", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    x = hf_inputs(ours.config.vocab_size)
    with torch.no_grad():
        want = ours.sentence_logits(ours(**x).pooler_output)
        torch.testing.assert_close(getattr(theirs.eval()(**x), hf_logits), want,
                                   atol=1e-5, rtol=1e-5)
    assert not torch.equal(want[0], torch.zeros(2))


def test_roberta_with_nsp_gets_two_segment_types_and_the_head(prepared, tmp_path: Path) -> None:
    out = run(prepared, tmp_path, "roberta-tiny", "mlm+nsp")
    ours = plmkit.load(out)
    assert ours.config.type_vocab_size == 2 and ours.config.sentence_head
    plain = run(prepared, tmp_path, "roberta-tiny", "mlm")
    assert plmkit.load(plain).config.type_vocab_size == 1  # the MLM-only model is unchanged
    assert not any(isinstance(m, SentenceHead) for m in plmkit.load(plain).modules())
    plmkit.save_hf(ours, tmp_path / "hf")  # RobertaForMaskedLM has no place for the head
    theirs, info = transformers.RobertaForMaskedLM.from_pretrained(tmp_path / "hf",
                                                                   output_loading_info=True)
    assert not info["missing_keys"]  # (the pooler, which RobertaForMaskedLM lacks, is extra)
    assert not any("seq_relationship" in k or "sentence" in k for k in info["unexpected_keys"])
    assert theirs.config.type_vocab_size == 2
