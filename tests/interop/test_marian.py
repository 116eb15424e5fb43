"""The aiayn <-> Marian mapping: the position-table permutation, the one table both ways, and the
config fields aiayn refuses."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from aiayn.interop import InteropError
from aiayn.interop.marian import (
    from_marian_config, from_marian_state, marian_order, to_marian_config, to_marian_state)
from aiayn.model import ModelConfig, Transformer
from aiayn.model.transformer import sinusoid_table

# The fields of an OPUS-MT config.json (opus-mt-de-en) that matter, at a small size.
OPUS_MT = dict(model_type="marian", vocab_size=58101, decoder_vocab_size=58101, d_model=32, encoder_layers=2,
               decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64,
               decoder_ffn_dim=64, activation_function="swish", scale_embedding=True, static_position_embeddings=True,
               normalize_before=False, normalize_embedding=False, add_final_layer_norm=False,
               share_encoder_decoder_embeddings=True, tie_word_embeddings=True, pad_token_id=58100,
               decoder_start_token_id=58100, eos_token_id=0, max_position_embeddings=512, dropout=0.1)
CONFIG_JSON = Path("opus-mt-de-en/config.json")


def test_marian_order_turns_the_interleaved_table_into_marians_halves() -> None:
    from transformers.models.marian.modeling_marian import MarianSinusoidalPositionalEmbedding

    marian = MarianSinusoidalPositionalEmbedding(64, 32).create_weight()
    ours = sinusoid_table(64, 32)
    assert (ours.index_select(1, marian_order(32)) - marian).abs().max() < 1e-6


def test_the_mapping_table_round_trips_every_weight_exactly() -> None:
    torch.manual_seed(0)
    model = Transformer(ModelConfig.preset("tiny", vocab_size=60, activation="swish", output_bias=True))
    torch.nn.init.normal_(model.output_projection.bias)
    back = from_marian_state(to_marian_state(model), model.config)
    assert back.keys() == model.state_dict().keys()
    assert all(torch.equal(back[k], v) for k, v in model.state_dict().items())
    assert to_marian_state(model)["final_logits_bias"].shape == (1, 60)


def test_an_opus_mt_config_becomes_a_model_config() -> None:
    config = from_marian_config(OPUS_MT, CONFIG_JSON, output_bias=True)
    assert (config.activation, config.output_bias, config.n_heads, config.d_ff) == ("swish", True, 4, 64)
    assert (config.pad_id, config.bos_id, config.eos_id) == (58100, 58100, 0)  # decoder start = <pad>, as Marian
    assert (config.positional_encoding, config.norm_placement, config.share_embeddings) == ("sinusoidal", "post", True)


@pytest.mark.parametrize("field,value", [
    ("normalize_before", True), ("normalize_embedding", True), ("add_final_layer_norm", True),
    ("static_position_embeddings", False), ("scale_embedding", False), ("share_encoder_decoder_embeddings", False),
    ("tie_word_embeddings", False), ("decoder_vocab_size", 1000), ("activation_function", "tanh"),
    ("decoder_attention_heads", 8), ("decoder_ffn_dim", 128), ("eos_token_id", 99999), ("model_type", "bart"),
])
def test_unsupported_config_fields_are_refused_by_name(field: str, value) -> None:
    with pytest.raises(InteropError, match=f"config.json: {field}="):
        from_marian_config({**OPUS_MT, field: value}, CONFIG_JSON, output_bias=False)


def test_heads_that_do_not_divide_d_model_are_refused_by_name() -> None:
    with pytest.raises(InteropError, match="encoder_attention_heads=5 .*does not divide d_model=32"):
        from_marian_config({**OPUS_MT, "encoder_attention_heads": 5, "decoder_attention_heads": 5}, CONFIG_JSON, False)


@pytest.mark.parametrize("field,value", [("positional_encoding", "learned"), ("norm_placement", "pre"),
                                         ("share_embeddings", False)])
def test_export_refuses_what_marian_cannot_express(field: str, value) -> None:
    with pytest.raises(InteropError, match=f"{field}="):
        to_marian_config(ModelConfig.preset("tiny", vocab_size=60, **{field: value}))
