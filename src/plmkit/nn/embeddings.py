"""Input embeddings: tokens (optionally factorized), learned positions, segments."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from plmkit.errors import UserError
from plmkit.nn.dropout import Dropout


class Embeddings(nn.Module):
    """token + position + segment, LayerNorm, dropout (BERT section 3, Figure 2).

    With `embedding_size` smaller than `hidden`, the sum lives in E and a linear map
    projects it to H (ALBERT's factorized embedding parameterization, ELECTRA-small).
    `task_types` > 0 adds one more learned table, indexed by `task_type_ids` (id 0 when not
    given): ERNIE's task-type embedding.
    """

    def __init__(
        self,
        vocab_size: int,
        hidden: int,
        max_positions: int,
        type_vocab_size: int = 2,
        *,
        embedding_size: int | None = None,
        pad_token_id: int = 0,
        eps: float = 1e-12,
        dropout: float = 0.1,
        task_types: int = 0,
    ):
        super().__init__()
        size = embedding_size or hidden
        self.tokens = nn.Embedding(vocab_size, size, padding_idx=pad_token_id)
        self.positions = nn.Embedding(max_positions, size)
        self.segments = nn.Embedding(type_vocab_size, size) if type_vocab_size else None
        self.task_types = nn.Embedding(task_types, size) if task_types else None
        self.norm = nn.LayerNorm(size, eps=eps)
        self.drop = Dropout(dropout)
        self.project = nn.Linear(size, hidden) if size != hidden else None

    def forward(
        self,
        input_ids: Tensor,
        token_type_ids: Tensor | None = None,
        position_ids: Tensor | None = None,
        task_type_ids: Tensor | None = None,
    ) -> Tensor:
        """input_ids: (B, S) -> (B, S, H)."""
        seq = input_ids.shape[1]
        if seq > self.positions.num_embeddings:
            raise UserError(
                f"sequence length {seq} exceeds the model's {self.positions.num_embeddings} "
                "positions; truncate the input or use a shorter --seq-len"
            )
        if position_ids is None:
            position_ids = torch.arange(seq, device=input_ids.device)[None]  # (1, S)
        x = self.tokens(input_ids) + self.positions(position_ids)  # (B, S, E)
        if self.segments is not None:
            if token_type_ids is None:
                x = x + self.segments.weight[0]
            else:
                x = x + self.segments(token_type_ids)
        if self.task_types is not None:
            x = x + (self.task_types.weight[0] if task_type_ids is None
                     else self.task_types(task_type_ids))
        x = self.drop(self.norm(x))
        return self.project(x) if self.project is not None else x  # (B, S, H)
