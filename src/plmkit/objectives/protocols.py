"""What the objectives call on a model, named. A model trains with an objective when it has
that objective's methods (`nn/encoder.py` `EncoderWithHeads` has the BERT-layout ones); the
objectives annotate their `model` with these instead of relying on duck typing."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from torch import Tensor

from plmkit.nn.rel_attention import RelativeOutput


class EncoderOutputs(Protocol):
    """`nn/encoder.py` `EncoderOutput`: hidden states (B, S, H), pooled [CLS] (B, H) or None."""

    @property
    def last_hidden_state(self) -> Tensor: ...

    @property
    def pooler_output(self) -> Tensor | None: ...


class Encoder(Protocol):
    """A BERT-layout encoder: ids, mask and segment ids (B, S) -> `EncoderOutputs`."""

    def __call__(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                 token_type_ids: Tensor | None = None) -> EncoderOutputs: ...


class MaskedLMModel(Encoder, Protocol):
    """`mlm`: an encoder with a masked-LM head."""

    def mlm_logits(self, hidden: Tensor, positions: Tensor | None = None) -> Tensor:
        """hidden (B, S, H), positions (B, P) -> (B, P, V)."""
        ...


@runtime_checkable
class SentencePairModel(MaskedLMModel, Protocol):
    """`mlm+nsp`, `mlm+sop`, `ernie`, `dlm`: also a two-way head on the pooled [CLS]."""

    def sentence_logits(self, pooled: Tensor) -> Tensor:
        """pooled (B, H) -> (B, 2)."""
        ...


class ElectraModel(MaskedLMModel, Protocol):
    """`electra`: the generator's hidden states, its MLM head (`mlm_logits`) and the
    discriminator's replaced-token head; calling the model runs the discriminator."""

    def generator_hidden(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                         token_type_ids: Tensor | None = None) -> Tensor:
        """ids (B, S) -> (B, S, H_g)."""
        ...

    def rtd_logits(self, hidden: Tensor) -> Tensor:
        """hidden (B, S, H) -> (B, S)."""
        ...

    def baseline_logits(self, hidden: Tensor, positions: Tensor) -> Tensor:
        """The adversarial generator's baseline: generator hidden (B, S, H_g), positions
        (B, P) -> (B, P)."""
        ...


class RelativeLM(Protocol):
    """`plm`, `clm`: a relative-attention model with memory (XLNet, Transformer-XL) and an LM
    head; `config` has `mem_len`, `reuse_len` (XLNet) and `attn_type`."""

    config: Any

    def __call__(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                 token_type_ids: Tensor | None = None, **streams: Any) -> RelativeOutput:
        """`streams`: perm_mask, target_mapping (XLNet), mems, use_mems."""
        ...

    def lm_logits(self, hidden: Tensor) -> Tensor:
        """hidden (B, S|P, H) -> (B, S|P, V)."""
        ...
