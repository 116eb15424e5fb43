"""aiayn <-> Marian, the format of transformers' MarianMTModel in which the OPUS-MT models ship:
the configuration and the weights, both ways, from one mapping table.

Marian's network is the paper's Transformer (§3): post-norm layers (§3.1), d_model / h heads
(§3.2.2), embeddings shared by encoder, decoder and output and scaled by sqrt(d_model) (§3.4),
sinusoidal positions (§3.5). What it adds, aiayn has as config fields: the feed-forward activation
(`activation`, Marian's "swish") and a bias on the output projection (`output_bias`, Marian's
final_logits_bias). One difference is only of layout: Marian's position table holds all sines in
the first half of d_model and all cosines in the second, where §3.5 and aiayn interleave them
(sin, cos, sin, ...). Rather than a second layout in the model, the conversion permutes the d_model
("residual stream") dimension of the whole network alike: embedding columns, every LayerNorm, the
input columns of the q/k/v and first feed-forward projections, the output rows of the attention
output and second feed-forward projections. LayerNorm and every dot product sum over that
dimension, so the permuted network computes exactly the same function (up to float summation order).

Marian variants aiayn's model cannot express are refused with the config field named.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from aiayn.interop.common import InteropError
from aiayn.model import ModelConfig, Transformer

# How a tensor's d_model dimension is laid out: "rows" (a vector or the output rows of a
# projection), "columns" (the input columns of a projection, the features of an embedding),
# "none" (no d_model dimension: head or feed-forward internals), "logits_bias" (Marian keeps
# final_logits_bias as a [1, vocab] row, aiayn as a [vocab] vector).
Layout = Literal["rows", "columns", "none", "logits_bias"]
# aiayn name, the Marian name(s) (two: aiayn's fused key/value projection is Marian's k_proj and v_proj stacked), layout.
MappingRow = tuple[str, tuple[str, ...], Layout]

SHARED_EMBEDDING = "model.shared.weight"
# Tied copies of the shared embedding that a Marian file may hold besides (or instead of) it.
EMBEDDING_COPIES = ("model.encoder.embed_tokens.weight", "model.decoder.embed_tokens.weight", "lm_head.weight")
POSITION_TABLES = ("model.encoder.embed_positions.weight", "model.decoder.embed_positions.weight")
MARIAN_ACTIVATIONS = {"relu": "relu", "swish": "swish", "silu": "swish", "gelu": "gelu"}


def marian_order(d_model: int) -> Tensor:
    """Marian's feature k is aiayn's feature marian_order[k]: the even (sine) features, then the odd (cosine) ones."""
    return torch.cat([torch.arange(0, d_model, 2), torch.arange(1, d_model, 2)])


def mapping_table(config: ModelConfig) -> list[MappingRow]:
    """Every aiayn weight with its Marian counterpart(s); the tied embedding appears once."""
    rows: list[MappingRow] = [("source_embeddings.tokens.weight", (SHARED_EMBEDDING,), "columns")]
    if config.output_bias:
        rows.append(("output_projection.bias", ("final_logits_bias",), "logits_bias"))

    def attention(ours: str, theirs: str) -> None:
        rows.extend([
            (f"{ours}.q_proj.weight", (f"{theirs}.q_proj.weight",), "columns"),
            (f"{ours}.q_proj.bias", (f"{theirs}.q_proj.bias",), "none"),
            (f"{ours}.kv_proj.weight", (f"{theirs}.k_proj.weight", f"{theirs}.v_proj.weight"), "columns"),
            (f"{ours}.kv_proj.bias", (f"{theirs}.k_proj.bias", f"{theirs}.v_proj.bias"), "none"),
            (f"{ours}.out_proj.weight", (f"{theirs}.out_proj.weight",), "rows"),
            (f"{ours}.out_proj.bias", (f"{theirs}.out_proj.bias",), "rows"),
        ])

    def norm(ours: str, theirs: str) -> None:
        rows.extend([(f"{ours}.norm.weight", (f"{theirs}.weight",), "rows"),
                     (f"{ours}.norm.bias", (f"{theirs}.bias",), "rows")])

    def feed_forward(ours: str, theirs: str) -> None:
        rows.extend([
            (f"{ours}.feed_forward.linear1.weight", (f"{theirs}.fc1.weight",), "columns"),
            (f"{ours}.feed_forward.linear1.bias", (f"{theirs}.fc1.bias",), "none"),
            (f"{ours}.feed_forward.linear2.weight", (f"{theirs}.fc2.weight",), "rows"),
            (f"{ours}.feed_forward.linear2.bias", (f"{theirs}.fc2.bias",), "rows"),
        ])
        norm(f"{ours}.feed_forward_residual", f"{theirs}.final_layer_norm")

    for side, n_layers in (("encoder", config.n_encoder_layers), ("decoder", config.n_decoder_layers)):
        for i in range(n_layers):
            ours, theirs = f"{side}.layers.{i}", f"model.{side}.layers.{i}"
            attention(f"{ours}.self_attention", f"{theirs}.self_attn")
            norm(f"{ours}.self_attention_residual", f"{theirs}.self_attn_layer_norm")
            if side == "decoder":
                attention(f"{ours}.cross_attention", f"{theirs}.encoder_attn")
                norm(f"{ours}.cross_attention_residual", f"{theirs}.encoder_attn_layer_norm")
            feed_forward(ours, theirs)
    return rows


def to_marian_state(model: Transformer) -> dict[str, Tensor]:
    """aiayn weights -> Marian weights (without the position tables, which Marian computes, and
    without the tied copies of the embedding)."""
    ours = model.state_dict()
    order = marian_order(model.config.d_model)
    state: dict[str, Tensor] = {}
    for name, marian_names, layout in mapping_table(model.config):
        tensor = ours[name].detach()
        if layout == "rows":
            tensor = tensor.index_select(0, order)
        elif layout == "columns":
            tensor = tensor.index_select(1, order)
        elif layout == "logits_bias":
            tensor = tensor[None]
        for marian_name, part in zip(marian_names, tensor.chunk(len(marian_names))):
            state[marian_name] = part.clone()
    return state


def from_marian_state(state: dict[str, Tensor], config: ModelConfig) -> dict[str, Tensor]:
    """Marian weights (with `SHARED_EMBEDDING` present) -> aiayn's state dict for `config`.
    Raises KeyError naming a Marian tensor the state lacks."""
    inverse = torch.argsort(marian_order(config.d_model))
    ours: dict[str, Tensor] = {}
    for name, marian_names, layout in mapping_table(config):
        tensor = torch.cat([state[n] for n in marian_names])
        if layout == "rows":
            tensor = tensor.index_select(0, inverse)
        elif layout == "columns":
            tensor = tensor.index_select(1, inverse)
        elif layout == "logits_bias":
            tensor = tensor[0]
        ours[name] = tensor
    # §3.4: one matrix, under the three names aiayn's state dict gives it.
    ours["target_embeddings.tokens.weight"] = ours["output_projection.weight"] = ours["source_embeddings.tokens.weight"]
    return ours


def to_marian_config(config: ModelConfig) -> dict[str, Any]:
    """MarianConfig arguments for an aiayn model; refuses what Marian cannot express."""
    for field, value, why in (
        ("positional_encoding", config.positional_encoding, "sinusoidal"),
        ("norm_placement", config.norm_placement, "post"),
        ("share_embeddings", config.share_embeddings, True),
    ):
        if value != why:
            raise InteropError(f"model config: {field}={json.dumps(value)} cannot be exported to Marian "
                               f"(MarianMTModel has only {field}={json.dumps(why)})")
    return dict(
        vocab_size=config.vocab_size, decoder_vocab_size=config.vocab_size, d_model=config.d_model,
        encoder_layers=config.n_encoder_layers, decoder_layers=config.n_decoder_layers,
        encoder_attention_heads=config.n_heads, decoder_attention_heads=config.n_heads,
        encoder_ffn_dim=config.d_ff, decoder_ffn_dim=config.d_ff, activation_function=config.activation,
        dropout=config.dropout, attention_dropout=0.0, activation_dropout=0.0,
        max_position_embeddings=config.max_positions, scale_embedding=True,
        share_encoder_decoder_embeddings=True, tie_word_embeddings=True,
        pad_token_id=config.pad_id, eos_token_id=config.eos_id, bos_token_id=config.bos_id,
        decoder_start_token_id=config.bos_id,
        forced_eos_token_id=None,  # aiayn lets a capped output end as it stands
        # Read by other Marian converters (CTranslate2's); transformers' MarianMTModel is always so.
        normalize_before=False, normalize_embedding=False, static_position_embeddings=True,
    )


def _refuse(file: Path, field: str, value: Any, why: str) -> InteropError:
    return InteropError(f"{file}: {field}={json.dumps(value)} is not supported ({why})")


def from_marian_config(values: dict[str, Any], file: Path, output_bias: bool) -> ModelConfig:
    """An aiayn ModelConfig from a Marian config.json's values. Absent fields take
    MarianConfig's defaults, as transformers would; what aiayn's model cannot express is refused
    with an InteropError naming the field."""
    def get(field: str, default: Any) -> Any:
        value = values.get(field)
        return default if value is None else value

    if get("model_type", "marian") != "marian":
        raise _refuse(file, "model_type", values["model_type"], "only Marian models are imported")
    # field, MarianConfig's default, the value aiayn's model needs, why
    for field, default, needed, why in (
        ("normalize_before", False, False, "pre-norm layers with final LayerNorms; aiayn imports post-norm Marian models"),
        ("add_final_layer_norm", False, False, "a LayerNorm after each stack, which the post-norm model lacks"),
        ("normalize_embedding", False, False, "a LayerNorm on the embeddings (layernorm_embedding)"),
        ("static_position_embeddings", True, True, "learned positions; aiayn imports sinusoidal ones"),
        ("scale_embedding", False, True, "embeddings not scaled by sqrt(d_model), §3.4"),
        ("share_encoder_decoder_embeddings", True, True, "separate encoder and decoder embeddings"),
        ("tie_word_embeddings", True, True, "an output projection untied from the embeddings"),
    ):
        if bool(get(field, default)) != needed:
            raise _refuse(file, field, get(field, default), why)
    vocab_size = get("vocab_size", 58101)
    if get("decoder_vocab_size", vocab_size) != vocab_size:
        raise _refuse(file, "decoder_vocab_size", values["decoder_vocab_size"],
                      f"a target vocabulary apart from the source's {vocab_size}")
    activation = get("activation_function", "gelu")
    if activation not in MARIAN_ACTIVATIONS:
        raise _refuse(file, "activation_function", activation, f"aiayn has {', '.join(sorted(MARIAN_ACTIVATIONS))}")
    for encoder_field, decoder_field, default in (("encoder_attention_heads", "decoder_attention_heads", 16),
                                                  ("encoder_ffn_dim", "decoder_ffn_dim", 4096)):
        if get(encoder_field, default) != get(decoder_field, default):
            raise _refuse(file, decoder_field, get(decoder_field, default),
                          f"differs from {encoder_field}={get(encoder_field, default)}; aiayn's encoder and decoder share one")
    eos = get("eos_token_id", 0)
    if isinstance(eos, list):
        if len(eos) != 1:
            raise _refuse(file, "eos_token_id", eos, "aiayn decodes to one end-of-sentence token")
        eos = eos[0]
    # Marian starts decoding from its decoder start token (OPUS-MT: <pad>): that is aiayn's <sos>.
    pad, start = get("pad_token_id", 58100), get("decoder_start_token_id", 58100)
    for field, value in (("pad_token_id", pad), ("decoder_start_token_id", start), ("eos_token_id", eos)):
        if type(value) is not int or not 0 <= value < vocab_size:
            raise _refuse(file, field, value, f"not an id in the vocabulary of {vocab_size}")
    if eos in (pad, start):
        # Decoding never outputs <pad> or the start token, so such a model could never end a sentence.
        raise _refuse(file, "eos_token_id", eos, "is also the padding or decoder start token")
    d_model, heads = get("d_model", 1024), get("encoder_attention_heads", 16)
    if type(d_model) is int and type(heads) is int and heads > 0 and d_model % heads:
        raise _refuse(file, "encoder_attention_heads", heads, f"does not divide d_model={d_model}")
    fields = dict(
        vocab_size=vocab_size, d_model=d_model, n_heads=heads, d_ff=get("encoder_ffn_dim", 4096),
        n_encoder_layers=get("encoder_layers", 12), n_decoder_layers=get("decoder_layers", 12),
        dropout=get("dropout", 0.1), max_positions=get("max_position_embeddings", 1024),
        pad_id=pad, bos_id=start, eos_id=eos, activation=MARIAN_ACTIVATIONS[activation], output_bias=output_bias,
    )
    try:
        return ModelConfig(**fields)
    except (TypeError, ValueError) as error:
        raise InteropError(f"{file}: {error}") from None
