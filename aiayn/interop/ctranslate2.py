"""aiayn checkpoint -> CTranslate2 model folder (an external inference engine's format), written
straight from aiayn's weights as a `ctranslate2.specs.TransformerSpec`, the way CTranslate2's own
converters do.

The spec is the paper's model (§3): post-norm layers (or pre-norm, with final LayerNorms),
embeddings scaled by sqrt(d_model) and shared by source, target and output projection (§3.4),
and aiayn's own position table (§3.5's interleaved sinusoids, or learned positions) stored in the
model, so no layout is assumed. The vocabulary is the tokenizer's pieces in id order, decoding
starts from aiayn's <sos> piece, and the source is passed as pieces + "</s>" (CTranslate2 adds
nothing), as aiayn's encoder sees it. The folder also holds `source.spm` and `target.spm`, the
SentencePiece models that turn raw text into those pieces and back, so it is self-contained.

Needs `ctranslate2` (the `interop` extra).
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from aiayn.checkpoint import load_checkpoint
from aiayn.data.marian_vocab import SOURCE_SPM, TARGET_SPM, UNK, AnyTokenizer, MarianVocabTokenizer
from aiayn.files import building
from aiayn.interop.common import InteropError, optional_module, refuse_moses_text, require_empty
from aiayn.model import Transformer
from aiayn.model.transformer import MultiHeadAttention, sinusoid_table

if TYPE_CHECKING:
    from ctranslate2.specs.transformer_spec import TransformerSpec

QUANTIZATIONS = ("int8", "bfloat16")  # or none: float32 weights, as aiayn's


def _set_linear(spec, weight: Tensor, bias: Tensor | None) -> None:
    spec.weight = weight.detach().float().contiguous()
    if bias is not None:
        spec.bias = bias.detach().float().contiguous()


def _set_norm(spec, norm: nn.LayerNorm) -> None:
    spec.gamma, spec.beta = norm.weight.detach().float(), norm.bias.detach().float()


def _set_attention(spec, attention: MultiHeadAttention, self_attention: bool) -> None:
    """CTranslate2 fuses q|k|v into one projection in self-attention; attention over the encoder
    output keeps q apart from a fused k|v, which is aiayn's kv_proj as it is."""
    q, kv = attention.q_proj, attention.kv_proj
    if self_attention:
        _set_linear(spec.linear[0], torch.cat([q.weight, kv.weight]), torch.cat([q.bias, kv.bias]))
    else:
        _set_linear(spec.linear[0], q.weight, q.bias)
        _set_linear(spec.linear[1], kv.weight, kv.bias)
    _set_linear(spec.linear[-1], attention.out_proj.weight, attention.out_proj.bias)


def ctranslate2_spec(model: Transformer, tokenizer: AnyTokenizer) -> "TransformerSpec":
    """The CTranslate2 specification of an aiayn model, its vocabulary being the tokenizer's pieces."""
    optional_module("ctranslate2")
    from ctranslate2.specs import common_spec, transformer_spec

    c = model.config
    if not c.share_embeddings:
        raise InteropError("model config: share_embeddings=false cannot be exported (aiayn exports the "
                           "paper's one shared embedding matrix, §3.4)")
    activation = {"relu": common_spec.Activation.RELU, "swish": common_spec.Activation.SWISH,
                  "gelu": common_spec.Activation.GELU}[c.activation]
    pre_norm = c.norm_placement == "pre"
    spec = transformer_spec.TransformerSpec.from_config(
        (c.n_encoder_layers, c.n_decoder_layers), c.n_heads, pre_norm=pre_norm, activation=activation)
    spec.config.layer_norm_epsilon = nn.LayerNorm(1).eps  # PyTorch's, which aiayn's LayerNorms use

    embedding = model.source_embeddings.tokens.weight
    for side, embeddings, stack in ((spec.encoder, model.source_embeddings, model.encoder),
                                    (spec.decoder, model.target_embeddings, model.decoder)):
        side.scale_embeddings = True  # x sqrt(d_model), §3.4
        # Sinusoids up to max_positions, or each side's own learned table (Table 3 row E).
        side.position_encodings.encodings = (sinusoid_table(c.max_positions, c.d_model)
                                             if c.positional_encoding == "sinusoidal"
                                             else embeddings.positions.embedding.weight.detach().float())
        if pre_norm:
            _set_norm(side.layer_norm, stack.final_norm)
    spec.encoder.embeddings[0].weight = embedding.detach().float()
    spec.decoder.embeddings.weight = embedding.detach().float()
    _set_linear(spec.decoder.projection, model.output_projection.weight, model.output_projection.bias)

    for layer_spec, layer in zip(spec.encoder.layer, model.encoder.layers):
        _set_attention(layer_spec.self_attention, layer.self_attention, self_attention=True)
        _set_norm(layer_spec.self_attention.layer_norm, layer.self_attention_residual.norm)
    for layer_spec, layer in zip(spec.decoder.layer, model.decoder.layers):
        _set_attention(layer_spec.self_attention, layer.self_attention, self_attention=True)
        _set_norm(layer_spec.self_attention.layer_norm, layer.self_attention_residual.norm)
        _set_attention(layer_spec.attention, layer.cross_attention, self_attention=False)
        _set_norm(layer_spec.attention.layer_norm, layer.cross_attention_residual.norm)
    for layer_spec, layer in zip([*spec.encoder.layer, *spec.decoder.layer], [*model.encoder.layers, *model.decoder.layers]):
        _set_linear(layer_spec.ffn.linear_0, layer.feed_forward.linear1.weight, layer.feed_forward.linear1.bias)
        _set_linear(layer_spec.ffn.linear_1, layer.feed_forward.linear2.weight, layer.feed_forward.linear2.bias)
        _set_norm(layer_spec.ffn.layer_norm, layer.feed_forward_residual.norm)

    pieces = tokenizer.pieces(list(range(tokenizer.vocab_size)))
    if UNK not in pieces:
        raise InteropError(f"tokenizer: no {UNK} piece for CTranslate2 to map unknown source pieces to")
    spec.register_source_vocabulary(pieces)
    spec.register_target_vocabulary(pieces)
    spec.config.unk_token = UNK
    spec.config.bos_token = spec.config.decoder_start_token = pieces[c.bos_id]
    spec.config.eos_token = pieces[c.eos_id]
    return spec


def write_ctranslate2(model: Transformer, tokenizer: AnyTokenizer, out: str | Path,
                      quantization: str | None = None) -> Path:
    """Write the CTranslate2 folder of a model and its tokenizer (atomically; `out` must not exist
    or be empty). quantization: None (float32), "int8" or "bfloat16"."""
    if quantization is not None and quantization not in QUANTIZATIONS:
        raise InteropError(f"quantization {quantization!r}: choose {' or '.join(QUANTIZATIONS)}, or none for float32")
    out = Path(out)
    require_empty(out)
    spec = ctranslate2_spec(model, tokenizer)
    spec.validate()
    spec.optimize(quantization=quantization)
    if isinstance(tokenizer, MarianVocabTokenizer):
        source_proto, target_proto = tokenizer.source_proto, tokenizer.target_proto
    else:
        source_proto = target_proto = tokenizer.model_proto
    with building(out) as staging:
        spec.save(str(staging))
        (staging / SOURCE_SPM).write_bytes(source_proto)
        (staging / TARGET_SPM).write_bytes(target_proto)
    return out


def export_ctranslate2(checkpoint: str | Path, out: str | Path, quantization: str | None = None) -> Path:
    """An aiayn checkpoint (or run directory) -> a CTranslate2 model folder at `out`."""
    require_empty(Path(out))
    model, tokenizer, config = load_checkpoint(checkpoint)
    refuse_moses_text(config, checkpoint, "CTranslate2")
    return write_ctranslate2(model, tokenizer, out, quantization)
