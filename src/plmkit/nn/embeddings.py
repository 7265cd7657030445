"""Input embeddings: tokens (optionally factorized), learned positions, segments."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from plmkit.errors import UserError
from plmkit.nn.config import EncoderConfig
from plmkit.nn.dropout import Dropout


class Embeddings(nn.Module):
    """token + position + segment, LayerNorm, dropout (BERT section 3, Figure 2).

    With `embedding_size` smaller than `hidden_size`, the sum lives in E and a linear map
    projects it to H (ALBERT's factorized embedding parameterization, ELECTRA-small).
    """

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        size = self.size = cfg.embedding_size or cfg.hidden_size
        self.tokens = nn.Embedding(cfg.vocab_size, size, padding_idx=cfg.pad_token_id)
        self.positions = nn.Embedding(cfg.max_positions, size)
        self.segments = nn.Embedding(cfg.type_vocab_size, size) if cfg.type_vocab_size else None
        self.norm = nn.LayerNorm(size, eps=cfg.layer_norm_eps)
        self.drop = Dropout(cfg.dropout)
        self.project = nn.Linear(size, cfg.hidden_size) if size != cfg.hidden_size else None

    def forward(self, input_ids: Tensor, token_type_ids: Tensor | None = None,
                position_ids: Tensor | None = None, extra: Tensor | None = None) -> Tensor:
        """input_ids: (B, S), position_ids: (B|1, S) or None for 0..S-1, extra: more
        embeddings (B, S, E) or (E,) summed in before the LayerNorm -> (B, S, H)."""
        seq = input_ids.shape[1]
        if seq > self.positions.num_embeddings:
            raise UserError(
                f"sequence length {seq} exceeds the model's {self.positions.num_embeddings} "
                "positions; truncate the input or use a shorter --seq-len / --max-seq-len"
            )
        if position_ids is None:
            position_ids = torch.arange(seq, device=input_ids.device)[None]  # (1, S)
        x = self.tokens(input_ids) + self.positions(position_ids)  # (B, S, E)
        if self.segments is not None:
            x = x + lookup(self.segments, token_type_ids)
        if extra is not None:
            x = x + extra
        x = self.drop(self.norm(x))
        return self.project(x) if self.project is not None else x  # (B, S, H)


def lookup(table: nn.Embedding, ids: Tensor | None) -> Tensor:
    """ids: (B, S) -> (B, S, E); the row of id 0 (E,) when `ids` is None."""
    return table.weight[0] if ids is None else table(ids)
