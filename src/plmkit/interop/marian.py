"""A plmkit Transformer's weights in transformers' `MarianMTModel`, the encoder-decoder of
the same shape (post-LN, ReLU, sinusoidal positions, embeddings scaled by sqrt(d), one
embedding shared by encoder, decoder and output). plmkit does not export the Transformer; the
copy is what `plmkit bench` and `benchmarks/transformer_decoding.py` compare it against."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

# plmkit block parameter -> Marian layer parameter (q/k/v are fused in plmkit: `_layer` splits)
LAYER_KEYS = (("attn.out", "self_attn.out_proj"), ("attn_norm", "self_attn_layer_norm"),
              ("ffn.up", "fc1"), ("ffn.down", "fc2"), ("ffn_norm", "final_layer_norm"),
              ("cross.q", "encoder_attn.q_proj"), ("cross.out", "encoder_attn.out_proj"),
              ("cross_norm", "encoder_attn_layer_norm"))


def marian_config(config: Any) -> Any:
    """transformers' MarianConfig of a plmkit Transformer's shape, with the same dropouts
    (none inside the feed-forward layer)."""
    import transformers

    return transformers.MarianConfig(
        vocab_size=config.vocab_size, d_model=config.hidden_size,
        encoder_layers=config.num_layers, decoder_layers=config.num_layers,
        encoder_attention_heads=config.num_heads, decoder_attention_heads=config.num_heads,
        encoder_ffn_dim=config.intermediate_size, decoder_ffn_dim=config.intermediate_size,
        activation_function=config.activation, dropout=config.dropout,
        attention_dropout=config.attention_dropout, activation_dropout=0.0,
        max_position_embeddings=config.max_positions, scale_embedding=True,
        share_encoder_decoder_embeddings=True, tie_word_embeddings=True,
        pad_token_id=config.pad_token_id, decoder_start_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id, forced_eos_token_id=config.eos_token_id)


def to_marian(ours: nn.Module) -> nn.Module:
    """A MarianMTModel (SDPA attention) holding the weights of plmkit Transformer `ours`:
    fused q/k/v split into q_proj, k_proj, v_proj, plmkit's (interleaved) sinusoid table
    copied into both position tables, LayerNorm eps set to plmkit's."""
    import transformers

    theirs = transformers.MarianMTModel(marian_config(ours.config))
    theirs.config._attn_implementation = "sdpa"
    weights = ours.state_dict()
    state = {"model.shared.weight": weights["embed.weight"]}
    for side, blocks in (("encoder", ours.encoder), ("decoder", ours.decoder)):
        state[f"model.{side}.embed_positions.weight"] = ours.positions
        for i in range(len(blocks)):
            state.update(_layer(weights, f"{side}.{i}.", f"model.{side}.layers.{i}.", side))
    theirs.load_state_dict(state, strict=False)
    shared = theirs.model.shared.weight
    for embedding in (theirs.model.encoder.embed_tokens, theirs.model.decoder.embed_tokens):
        embedding.weight = shared
    theirs.lm_head.weight = shared
    for m in theirs.modules():
        if isinstance(m, nn.LayerNorm):
            m.eps = ours.config.layer_norm_eps
    return theirs


def _layer(ours: dict[str, Tensor], src: str, dst: str, side: str) -> dict[str, Tensor]:
    """One plmkit encoder / decoder block's weights under Marian's names."""
    out = {}
    for p in ("weight", "bias"):
        for a, b in LAYER_KEYS:
            if f"{src}{a}.{p}" in ours:
                out[f"{dst}{b}.{p}"] = ours[f"{src}{a}.{p}"]
        for name, t in zip("qkv", ours[f"{src}attn.qkv.{p}"].chunk(3), strict=True):
            out[f"{dst}self_attn.{name}_proj.{p}"] = t
        if side == "decoder":
            for name, t in zip("kv", ours[f"{src}cross.kv.{p}"].chunk(2), strict=True):
                out[f"{dst}encoder_attn.{name}_proj.{p}"] = t
    return out
