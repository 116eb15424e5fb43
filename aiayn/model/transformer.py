"""The Transformer of "Attention Is All You Need" (Vaswani et al., 2017), section 3, top to bottom.

Shapes: B batch, S source length, T target length, d = d_model, h = heads, d_k = d / h.
Token tensors are LongTensors padded on the right with `config.pad_id`. A `src_mask` is a bool
[B, S] tensor, True at real source tokens.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from aiayn.model.config import ModelConfig

KeyValue = tuple[Tensor, Tensor]  # keys and values split into heads: [B, h, length, d_k] each


# ----------------------------------------------------------------------------- masks (§3.2.3)

def padding_mask(tokens: Tensor, pad_id: int) -> Tensor:
    """[B, S] bool, True at real tokens: the positions attention may look at."""
    return tokens != pad_id


def key_padding_mask(src_mask: Tensor) -> Tensor:
    """[B, S] -> [B, 1, 1, S] for attention over the source.

    A row that is all padding would leave its queries nothing to attend to, and softmax over an
    all -inf row is NaN; such a row attends to everything instead, so its (meaningless) output stays
    finite and the other rows of the batch are untouched.
    """
    allowed = src_mask | ~src_mask.any(dim=-1, keepdim=True)
    return allowed[:, None, None, :]


def look_ahead_mask(n_queries: int, n_keys: int, device: torch.device | None = None) -> Tensor:
    """[n_queries, n_keys] bool: query i (the last n_queries of n_keys positions) sees keys <= i.

    This is the decoder's mask of §3.2.3 that keeps the auto-regressive property. With n_keys >
    n_queries the earlier keys come from the decoding cache and are all visible.
    """
    first_query = n_keys - n_queries
    queries = torch.arange(first_query, n_keys, device=device)[:, None]
    keys = torch.arange(n_keys, device=device)[None, :]
    return keys <= queries


# ----------------------------------------------------------------------------- attention (§3.2)

def scaled_dot_product_attention(
    q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None, record: list[Tensor] | None = None,
    causal: bool = False,
) -> Tensor:
    """Eq. 1: softmax(Q K^T / sqrt(d_k)) V, over [B, h, length, d_k] tensors.

    `mask` is bool, True where a query may attend, broadcastable to [B, h, T_q, T_k]; `causal` is
    the look-ahead mask of §3.2.3 for as many queries as keys (query i sees keys <= i), given to
    the fused kernel as `is_causal`, so that it skips the masked half instead of reading a mask.

    Which kernel runs, by device and dtype:
    - CUDA: PyTorch's fused kernels, flash attention where there is no mask (the decoder's
      self-attention, a decoding step) and memory-efficient attention with a padding mask; never
      cuDNN's, which builds a graph for every new shape (`aiayn.runtime.use_cuda_kernels`).
    - CPU: the fused kernel, except for the single query of a decoding step and for short
      bfloat16 sequences (up to 64 keys), where explicit products measured faster (1.2-1.5x for
      bf16: the fused kernel's set-up outweighs its work there); from about 100 keys the fused
      kernel is faster, and it never holds the [B, h, T_q, T_k] scores. Under torch.compile the
      fused kernel always (no guard on the length, no recompiling when it crosses 64).
    - Weights wanted (`record`, [B, h, T_q, T_k] appended): the explicit path, which alone has them.
    """
    # Keys and values held wider than the queries (see DecoderCache) set the dtype to work in.
    # Float32 for weights recorded for pictures (one sentence: no cost to speak of), and for a
    # bfloat16 model on the CPU outside autocast (bfloat16 weights for decoding): there, bfloat16
    # batched products JIT-compile a kernel for every new shape and keep it (~1 MB each), and
    # decoding meets new shapes with every token; float32 attention costs little, and cached and
    # uncached decoding then agree.
    bf16_weights_on_cpu = (q.device.type == "cpu" and q.dtype == torch.bfloat16
                           and not torch.is_autocast_enabled("cpu"))
    work_dtype = torch.float32 if record is not None or bf16_weights_on_cpu else k.dtype
    if q.dtype != work_dtype or k.dtype != work_dtype:
        return scaled_dot_product_attention(q.to(work_dtype), k.to(work_dtype), v.to(work_dtype), mask,
                                            record, causal).to(q.dtype)
    if record is None and not _explicit_is_faster(q, k):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))
    if causal:
        mask = look_ahead_mask(q.size(-2), k.size(-2), q.device)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = scores.float().softmax(dim=-1)  # float32: bf16 exponentials lose too much
    if record is not None:
        record.append(weights.detach())
    return weights.to(v.dtype) @ v


def _explicit_is_faster(q: Tensor, k: Tensor) -> bool:
    """On the CPU, outside torch.compile: a decoding step's single query, or bfloat16 up to 64 keys.
    The device is tested first, so that no length is looked at (and guarded on) elsewhere."""
    if q.device.type != "cpu" or torch.compiler.is_compiling():
        return False
    return q.size(-2) == 1 or (q.dtype == torch.bfloat16 and k.size(-2) <= 64)


class MultiHeadAttention(nn.Module):
    """§3.2.2: h heads of d_k = d_model / h, each scaled dot-product attention, concatenated and
    projected by W^O.

    Keys and values are projected apart from queries (`project_key_value`) so the decoder can keep
    them in its cache and project the encoder output once per sentence.
    """

    def __init__(self, d_model: int, n_heads: int):
        super().__init__()
        self.n_heads = n_heads
        self.q_proj = nn.Linear(d_model, d_model)  # W^Q of all heads side by side
        self.kv_proj = nn.Linear(d_model, 2 * d_model)  # W^K and W^V, one matrix product for both
        self.out_proj = nn.Linear(d_model, d_model)

    def _split_heads(self, x: Tensor) -> Tensor:
        batch, length, d_model = x.shape
        return x.view(batch, length, self.n_heads, d_model // self.n_heads).transpose(1, 2)

    def project_key_value(self, x: Tensor) -> KeyValue:
        key, value = self.kv_proj(x).chunk(2, dim=-1)
        return self._split_heads(key), self._split_heads(value)

    def forward(
        self, query: Tensor, key: Tensor, value: Tensor, mask: Tensor | None = None,
        record: list[Tensor] | None = None, group: int = 1, causal: bool = False,
    ) -> Tensor:
        """query [B, T, d]; key, value from `project_key_value`: [B / group, h, S, d_k]; returns [B, T, d].

        With group > 1, each `group` consecutive query rows share one row of keys and values (the
        beams of one sentence and its encoder output): their queries attend side by side, so the
        keys and values are never repeated per beam.
        """
        q = self._split_heads(self.q_proj(query))
        rows, heads, length, d_k = q.shape
        if group > 1:
            q = q.view(rows // group, group, heads, length, d_k).transpose(1, 2).reshape(rows // group, heads, -1, d_k)
        attended = scaled_dot_product_attention(q, key, value, mask, record, causal)
        if group > 1:
            attended = attended.view(rows // group, heads, group, length, d_k).transpose(1, 2)
        return self.out_proj(attended.reshape(rows, heads, length, d_k).transpose(1, 2).reshape(rows, length, -1))


# ----------------------------------------------------------------------------- sub-layers (§3.1, §3.3)

ACTIVATION_FUNCTIONS = {"relu": F.relu, "swish": F.silu, "gelu": F.gelu}


class PositionwiseFeedForward(nn.Module):
    """§3.3, Eq. 2: FFN(x) = max(0, x W1 + b1) W2 + b2, applied to each position alike.

    ReLU (max(0, .)) is the paper's; "swish" (SiLU) and "gelu" replace it for imported Marian models.
    """

    def __init__(self, d_model: int, d_ff: int, activation: str = "relu"):
        super().__init__()
        self.linear1 = nn.Linear(d_model, d_ff)
        self.linear2 = nn.Linear(d_ff, d_model)
        self.activation = ACTIVATION_FUNCTIONS[activation]

    def forward(self, x: Tensor) -> Tensor:
        return self.linear2(self.activation(self.linear1(x)))


class Dropout(nn.Module):
    """§5.4's dropout: in training each element is zeroed with probability p and the rest scaled
    by 1 / (1 - p); in evaluation the identity. nn.Dropout's distribution (not its random stream),
    faster on a CPU.

    On a CPU, torch's dropout draws its mask with `bernoulli_`; a uniform draw compared with p makes
    forward and backward 1.7x faster (bench/dropout.py). Dropout follows every sub-layer, and
    torch's took a fifth of a training step of the tiny Multi30k model. Elsewhere torch's fused
    kernel is used.
    """

    def __init__(self, p: float):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        if x.device.type != "cpu":
            return F.dropout(x, self.p, training=True)
        keep = torch.rand(x.shape, device=x.device) >= self.p
        return x * keep * (1.0 / (1.0 - self.p))

    def extra_repr(self) -> str:
        return f"p={self.p}"


class ResidualNorm(nn.Module):
    """§3.1 and §5.4: the output of each sub-layer is LayerNorm(x + Dropout(Sublayer(x))).

    That is "post" placement, the paper's. "pre" placement (x + Dropout(Sublayer(LayerNorm(x))),
    from later work, not the paper) normalises the sub-layer's input instead and then needs one
    final LayerNorm after the whole stack, which the paper's model does not have.
    """

    def __init__(self, d_model: int, dropout: float, placement: str):
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.dropout = Dropout(dropout)
        self.pre_norm = placement == "pre"

    def sublayer_input(self, x: Tensor) -> Tensor:
        return self.norm(x) if self.pre_norm else x

    def forward(self, x: Tensor, sublayer_output: Tensor) -> Tensor:
        y = x + self.dropout(sublayer_output)
        return y if self.pre_norm else self.norm(y)


class EncoderLayer(nn.Module):
    """§3.1, encoder: multi-head self-attention, then the feed-forward network."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.self_attention = MultiHeadAttention(config.d_model, config.n_heads)
        self.self_attention_residual = ResidualNorm(config.d_model, config.dropout, config.norm_placement)
        self.feed_forward = PositionwiseFeedForward(config.d_model, config.d_ff, config.activation)
        self.feed_forward_residual = ResidualNorm(config.d_model, config.dropout, config.norm_placement)

    def forward(self, x: Tensor, mask: Tensor, record: list[Tensor] | None = None) -> Tensor:
        h = self.self_attention_residual.sublayer_input(x)
        x = self.self_attention_residual(x, self.self_attention(h, *self.self_attention.project_key_value(h), mask, record))
        h = self.feed_forward_residual.sublayer_input(x)
        return self.feed_forward_residual(x, self.feed_forward(h))


class DecoderLayer(nn.Module):
    """§3.1, decoder: masked self-attention, attention over the encoder output, feed-forward.

    Without `cross_attention`, it is a decoder-only language model's block (GPT's): masked
    self-attention and the feed-forward network.
    """

    def __init__(self, config: ModelConfig, cross_attention: bool = True):
        super().__init__()
        self.self_attention = MultiHeadAttention(config.d_model, config.n_heads)
        self.self_attention_residual = ResidualNorm(config.d_model, config.dropout, config.norm_placement)
        if cross_attention:
            self.cross_attention = MultiHeadAttention(config.d_model, config.n_heads)
            self.cross_attention_residual = ResidualNorm(config.d_model, config.dropout, config.norm_placement)
        else:
            self.cross_attention = self.cross_attention_residual = None
        self.feed_forward = PositionwiseFeedForward(config.d_model, config.d_ff, config.activation)
        self.feed_forward_residual = ResidualNorm(config.d_model, config.dropout, config.norm_placement)

    def forward(
        self, x: Tensor, memory_kv: KeyValue | None, memory_mask: Tensor | None, look_ahead: Tensor | None,
        cache: DecoderCache | None = None, index: int = 0, record: AttentionMaps | None = None,
        causal: bool = False,
    ) -> Tensor:
        """With a `cache`, x holds the new positions only; their keys and values join the cached
        ones (this is layer `index`), and the cache's beams share the encoder's keys and values.
        The look-ahead mask of §3.2.3 is `causal` (as many queries as keys) or `look_ahead` (new
        positions after cached ones)."""
        h = self.self_attention_residual.sublayer_input(x)
        key, value = self.self_attention.project_key_value(h)
        if cache is not None:
            key, value = cache.extend(index, key, value)
        attended = self.self_attention(h, key, value, look_ahead, record.decoder_self if record else None,
                                       causal=causal)
        x = self.self_attention_residual(x, attended)

        if self.cross_attention is not None:
            h = self.cross_attention_residual.sublayer_input(x)
            attended = self.cross_attention(h, *memory_kv, memory_mask, record.cross if record else None,
                                            group=cache.beams if cache is not None else 1)
            x = self.cross_attention_residual(x, attended)

        h = self.feed_forward_residual.sublayer_input(x)
        return self.feed_forward_residual(x, self.feed_forward(h))


# ----------------------------------------------------------------------------- embeddings (§3.4, §3.5)

def sinusoid_table(n_positions: int, d_model: int) -> Tensor:
    """§3.5: PE(pos, 2i) = sin(pos / 10000^(2i/d_model)), PE(pos, 2i+1) = cos(pos / 10000^(2i/d_model)).

    Computed in float64 so that large positions keep their precision, then stored as float32.
    """
    position = torch.arange(n_positions, dtype=torch.float64)[:, None]
    two_i = torch.arange(0, d_model, 2, dtype=torch.float64)
    angle = position / torch.pow(10000.0, two_i / d_model)
    table = torch.empty(n_positions, d_model, dtype=torch.float64)
    table[:, 0::2] = torch.sin(angle)
    table[:, 1::2] = torch.cos(angle)
    return table.float()


class SinusoidalPositionalEncoding(nn.Module):
    """§3.5: fixed sinusoids, "may allow the model to extrapolate to sequence lengths longer than
    the ones encountered during training": positions past the precomputed table are computed on
    the fly, so no length is out of range.

    The table follows the module's device and dtype (`.to(torch.bfloat16)` included). Positions past
    it are made for the call alone, never stored: a forward pass must not change the module, or one
    request with a very long input could change every later one (a float32 table regrown inside
    a bfloat16 model made every later matrix product fail)."""

    def __init__(self, d_model: int, max_positions: int):
        super().__init__()
        self.d_model = d_model
        self.register_buffer("table", sinusoid_table(max_positions, d_model), persistent=False)

    def forward(self, length: int, offset: int = 0) -> Tensor:
        end = offset + length
        if end <= self.table.size(0):
            return self.table[offset:end]
        return sinusoid_table(end, self.d_model)[offset:end].to(self.table.device, self.table.dtype)


class LearnedPositionalEncoding(nn.Module):
    """Table 3 row (E): a learned embedding per position instead of sinusoids (up to max_positions)."""

    def __init__(self, d_model: int, max_positions: int):
        super().__init__()
        self.embedding = nn.Embedding(max_positions, d_model)

    def forward(self, length: int, offset: int = 0) -> Tensor:
        end = offset + length
        if end > self.embedding.num_embeddings:
            raise ValueError(
                f"position {end - 1} is beyond the {self.embedding.num_embeddings} learned positions "
                "(max_positions); sinusoidal positions have no such limit")
        return self.embedding.weight[offset:end]


class Embeddings(nn.Module):
    """§3.4 + §3.5 + §5.4: token embedding * sqrt(d_model) + positional encoding, then dropout."""

    def __init__(self, tokens: nn.Embedding, config: ModelConfig):
        super().__init__()
        self.tokens = tokens
        self.scale = math.sqrt(config.d_model)
        position_class = (SinusoidalPositionalEncoding if config.positional_encoding == "sinusoidal"
                          else LearnedPositionalEncoding)
        self.positions = position_class(config.d_model, config.max_positions)
        self.dropout = Dropout(config.dropout)

    def forward(self, tokens: Tensor, offset: int = 0) -> Tensor:
        x = self.tokens(tokens) * self.scale + self.positions(tokens.size(1), offset)
        return self.dropout(x)


# ----------------------------------------------------------------------------- decoding state

def cache_dtype(like: Tensor) -> torch.dtype:
    """The dtype a decoding cache keeps keys and values in: float32 on the CPU in place of a
    16-bit dtype (see scaled_dot_product_attention); elsewhere autocast's dtype where autocast is
    on, else the model's."""
    if like.device.type == "cpu":
        return torch.float32 if like.dtype in (torch.bfloat16, torch.float16) else like.dtype
    if torch.is_autocast_enabled(like.device.type):
        return torch.get_autocast_dtype(like.device.type)
    return like.dtype


@dataclass
class DecoderCache:
    """Explicit incremental-decoding state (fairseq's incremental_state, as an object).

    `cross` holds each layer's keys/values of the encoder output, projected once per sentence
    [n, h, S, d_k], with `memory_mask` [n, 1, 1, S]. Rows are sentence-major: the `beams` rows of
    sentence i are rows i * beams ... i * beams + beams - 1, and their queries attend the
    sentence's keys together (MultiHeadAttention's `group`), never a copy per beam.
    `self_attention` holds each layer's keys/values of the target positions decoded so far, per
    row, in buffers [rows, h, capacity, d_k] that grow by CHUNK positions at a time: a new token
    writes one position (torch.cat re-copied the cache at every step; beam search still copies
    each buffer once per token, in `select`, to follow the surviving beams), so a token costs one
    step of the decoder, not a re-run of the prefix.

    On the CPU both are kept in float32 even for a bfloat16 model, where attention runs in float32
    (see scaled_dot_product_attention), so they are converted once, not at every step.
    """

    CHUNK = 16

    cross: list[KeyValue]  # empty for a decoder-only language model
    memory_mask: Tensor | None
    beams: int
    dtype: torch.dtype
    self_attention: list[KeyValue | None] = field(default_factory=list)
    length: int = 0  # target positions cached

    def extend(self, layer: int, key: Tensor, value: Tensor) -> KeyValue:
        """Store `layer`'s keys/values of the new positions after the cached ones; return those of
        every position so far (views of the buffers)."""
        end = self.length + key.size(2)
        while len(self.self_attention) <= layer:
            self.self_attention.append(None)
        buffers = self.self_attention[layer]
        if buffers is None or buffers[0].size(2) < end:
            capacity = -(-end // self.CHUNK) * self.CHUNK
            grown = tuple(key.new_empty(key.size(0), key.size(1), capacity, key.size(3), dtype=self.dtype)
                          for _ in range(2))
            if buffers is not None:
                for old, new in zip(buffers, grown):
                    new[:, :, :self.length] = old[:, :, :self.length]
            self.self_attention[layer] = buffers = grown
        buffers[0][:, :, self.length:end] = key
        buffers[1][:, :, self.length:end] = value
        return buffers[0][:, :, :end], buffers[1][:, :, :end]

    def advance(self, positions: int) -> None:
        """The decoder has stored `positions` new positions in every layer."""
        self.length += positions

    def select(self, rows: Tensor, sentences: Tensor | None = None) -> None:
        """Keep (and reorder) rows, e.g. the surviving beams of beam search; `sentences`, when some
        have finished, are those whose source side stays (rows must then be theirs, in order)."""
        self.self_attention = [None if kv is None else (kv[0].index_select(0, rows), kv[1].index_select(0, rows))
                               for kv in self.self_attention]
        if sentences is not None:
            self.cross = [(k.index_select(0, sentences), v.index_select(0, sentences)) for k, v in self.cross]
            if self.memory_mask is not None:
                self.memory_mask = self.memory_mask.index_select(0, sentences)


@dataclass
class AttentionMaps:
    """Attention weights recorded during a forward pass, one [B, h, T_q, T_k] tensor per layer;
    a kind set to None is not recorded (each costs memory quadratic in the length)."""

    encoder: list[Tensor] | None = field(default_factory=list)
    decoder_self: list[Tensor] | None = field(default_factory=list)
    cross: list[Tensor] | None = field(default_factory=list)


# ----------------------------------------------------------------------------- the model (§3, Figure 1)

class Encoder(nn.Module):
    """§3.1: a stack of N identical encoder layers."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(config) for _ in range(config.n_encoder_layers))
        # Only pre-norm needs a final LayerNorm; the paper's post-norm stack ends in one already.
        self.final_norm = nn.LayerNorm(config.d_model) if config.norm_placement == "pre" else nn.Identity()

    def forward(self, x: Tensor, mask: Tensor, record: AttentionMaps | None = None) -> Tensor:
        for layer in self.layers:
            x = layer(x, mask, record.encoder if record else None)
        return self.final_norm(x)


class Decoder(nn.Module):
    """§3.1: a stack of N identical decoder layers (without cross-attention: a language model's)."""

    def __init__(self, config: ModelConfig, cross_attention: bool = True):
        super().__init__()
        self.layers = nn.ModuleList(DecoderLayer(config, cross_attention) for _ in range(config.n_decoder_layers))
        self.final_norm = nn.LayerNorm(config.d_model) if config.norm_placement == "pre" else nn.Identity()

    def forward(
        self, x: Tensor, memory_kv: list[KeyValue] | None, memory_mask: Tensor | None,
        cache: DecoderCache | None = None, record: AttentionMaps | None = None,
    ) -> Tensor:
        past = cache.length if cache is not None else 0
        n_new = x.size(1)
        # One new token may look at every cached position: no mask needed. New positions from the
        # start are the causal case; only new positions after cached ones need a mask tensor.
        causal = n_new > 1 and past == 0
        look_ahead = look_ahead_mask(n_new, past + n_new, x.device) if n_new > 1 and past > 0 else None
        for i, layer in enumerate(self.layers):
            x = layer(x, memory_kv[i] if memory_kv else None, memory_mask, look_ahead, cache, i, record, causal)
        if cache is not None:
            cache.advance(n_new)
        return self.final_norm(x)


def init_weights(module: nn.Module, d_model: int) -> None:
    """Xavier-uniform projections, zero biases; then embeddings N(0, d^-1/2), so that
    embedding * sqrt(d_model) has unit variance. Embeddings last: with sharing, the output
    projection is the embedding matrix and must keep the embedding's initialisation."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    for m in module.modules():
        if isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, mean=0.0, std=d_model ** -0.5)


def position_limit(config: ModelConfig) -> int | None:
    """How many positions a sequence may have: learned positions stop at max_positions;
    sinusoids have no limit (None)."""
    return config.max_positions if config.positional_encoding == "learned" else None


class Transformer(nn.Module):
    """Figure 1: encoder-decoder with shared embeddings and a linear + softmax output (§3.4).

    `forward(src, tgt_in)` gives the logits for teacher forcing; `encode` and `decode` are the two
    halves that decoding uses, with a `DecoderCache` for one step per new token.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        source_tokens = nn.Embedding(config.vocab_size, config.d_model)
        target_tokens = source_tokens if config.share_embeddings else nn.Embedding(config.vocab_size, config.d_model)
        self.source_embeddings = Embeddings(source_tokens, config)
        self.target_embeddings = Embeddings(target_tokens, config)
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        # §3.4: the pre-softmax linear transformation shares the embedding matrix (no bias; an
        # imported Marian model may bring one, its final_logits_bias).
        self.output_projection = nn.Linear(config.d_model, config.vocab_size, bias=config.output_bias)
        if config.share_embeddings:
            self.output_projection.weight = target_tokens.weight
        init_weights(self, config.d_model)

    @property
    def position_limit(self) -> int | None:
        return position_limit(self.config)

    def encode(self, src: Tensor, record: AttentionMaps | None = None) -> Tensor:
        """src [B, S] -> memory [B, S, d] (the encoder output)."""
        mask = key_padding_mask(padding_mask(src, self.config.pad_id))
        return self.encoder(self.source_embeddings(src), mask, record)

    def new_cache(self, memory: Tensor, src_mask: Tensor, beams: int = 1) -> DecoderCache:
        """An empty decoding cache for `beams` rows per sentence, with the encoder output
        (memory [n, S, d], src_mask [n, S]) projected once for every layer."""
        dtype = cache_dtype(memory)
        cross = [tuple(kv.to(dtype) for kv in layer.cross_attention.project_key_value(memory))
                 for layer in self.decoder.layers]
        return DecoderCache(cross=cross, memory_mask=key_padding_mask(src_mask), beams=beams, dtype=dtype)

    def decode(
        self, tgt_in: Tensor, memory: Tensor | None = None, src_mask: Tensor | None = None,
        cache: DecoderCache | None = None, record: AttentionMaps | None = None,
    ) -> Tensor:
        """Logits [B, T, vocab] for target inputs [B, T] given the encoder output.

        Either `memory` and `src_mask` (`padding_mask(src, pad_id)`), or a `cache` (from
        `new_cache`), which holds the encoder's side; `tgt_in` then holds only the new positions,
        which follow the cached ones.
        """
        return self.output_projection(self.decoder_output(tgt_in, memory, src_mask, cache, record))

    def decoder_output(
        self, tgt_in: Tensor, memory: Tensor | None = None, src_mask: Tensor | None = None,
        cache: DecoderCache | None = None, record: AttentionMaps | None = None,
    ) -> Tensor:
        """`decode` before the output projection: the decoder stack's output [B, T, d]."""
        if cache is not None:
            memory_kv, memory_mask, offset = cache.cross, cache.memory_mask, cache.length
        else:
            memory_kv = [layer.cross_attention.project_key_value(memory) for layer in self.decoder.layers]
            memory_mask, offset = key_padding_mask(src_mask), 0
        x = self.target_embeddings(tgt_in, offset)
        return self.decoder(x, memory_kv, memory_mask, cache, record)

    def teacher_forcing_output(self, src: Tensor, tgt_in: Tensor, record: AttentionMaps | None = None) -> Tensor:
        """`forward` before the output projection [B, T, d]: training projects only the positions
        of real target tokens (aiayn.training.loss)."""
        memory = self.encode(src, record)
        return self.decoder_output(tgt_in, memory, padding_mask(src, self.config.pad_id), record=record)

    def forward(self, src: Tensor, tgt_in: Tensor, record: AttentionMaps | None = None) -> Tensor:
        """Teacher forcing: logits [B, T, vocab] for src [B, S] and tgt_in [B, T] (<sos> + target)."""
        return self.output_projection(self.teacher_forcing_output(src, tgt_in, record))


def parameter_counts(model: Transformer) -> dict[str, int]:
    """Parameters per component, each shared tensor counted once (as the paper counts them)."""
    seen: set[int] = set()

    def count(module: nn.Module) -> int:
        total = 0
        for parameter in module.parameters():
            if id(parameter) not in seen:
                seen.add(id(parameter))
                total += parameter.numel()
        return total

    counts = {
        "embeddings": count(model.source_embeddings) + count(model.target_embeddings) + count(model.output_projection),
        "encoder": count(model.encoder),
        "decoder": count(model.decoder),
    }
    counts["total"] = sum(counts.values())
    return counts
