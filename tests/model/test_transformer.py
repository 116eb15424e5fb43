"""The model of §3: formulas, masks, invariances, and parity with PyTorch's own modules."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from aiayn import ModelConfig, Transformer
from aiayn.model.transformer import (
    DecoderLayer,
    Dropout,
    EncoderLayer,
    MultiHeadAttention,
    key_padding_mask,
    look_ahead_mask,
    padding_mask,
    parameter_counts,
    sinusoid_table,
)

PAD, BOS, EOS = 0, 1, 2


def tiny_model(seed: int = 0, **overrides) -> Transformer:
    torch.manual_seed(seed)
    return Transformer(ModelConfig.preset("tiny", vocab_size=50, **overrides)).eval()


def random_tokens(batch: int, length: int, generator: torch.Generator) -> torch.Tensor:
    return torch.randint(3, 50, (batch, length), generator=generator)


# ----------------------------------------------------------------------------- configuration

@pytest.mark.parametrize("preset,paper", [("base", 65e6), ("big", 213e6)])
def test_presets_match_the_paper_parameter_counts(preset: str, paper: float) -> None:
    config = ModelConfig.preset(preset, vocab_size=37000)
    with torch.device("meta"):  # counts need shapes only, not memory
        model = Transformer(config)
    total = parameter_counts(model)["total"]
    assert abs(total - paper) / paper < 0.04


def test_shared_embeddings_are_one_matrix_counted_once() -> None:
    shared = Transformer(ModelConfig.preset("tiny", vocab_size=50))
    assert shared.output_projection.weight is shared.source_embeddings.tokens.weight
    assert shared.target_embeddings.tokens is shared.source_embeddings.tokens
    separate = Transformer(ModelConfig.preset("tiny", vocab_size=50, share_embeddings=False))
    extra = parameter_counts(separate)["embeddings"] - parameter_counts(shared)["embeddings"]
    assert extra == 2 * 50 * 32


def test_config_rejects_bad_values_naming_the_field() -> None:
    with pytest.raises(ValueError, match="n_heads"):
        ModelConfig.preset("tiny", n_heads=5)
    with pytest.raises(ValueError, match="norm_placement"):
        ModelConfig.preset("tiny", norm_placement="middle")
    with pytest.raises(ValueError, match="unknown preset"):
        ModelConfig.preset("huge")
    with pytest.raises(ValueError, match="eos_id"):
        ModelConfig.preset("tiny", vocab_size=2)
    assert ModelConfig.from_dict(ModelConfig.preset("small").to_dict()) == ModelConfig.preset("small")


def test_post_norm_has_no_final_layer_norm_and_pre_norm_has_one() -> None:
    # torch.nn.Transformer adds a final LayerNorm the paper's post-norm model does not have.
    post = tiny_model()
    assert isinstance(post.encoder.final_norm, nn.Identity) and isinstance(post.decoder.final_norm, nn.Identity)
    pre = tiny_model(norm_placement="pre")
    assert isinstance(pre.encoder.final_norm, nn.LayerNorm) and isinstance(pre.decoder.final_norm, nn.LayerNorm)
    x = torch.randn(1, 3, 32)
    layer = post.encoder.layers[0]
    out = layer(x, torch.ones(1, 1, 1, 3, dtype=torch.bool))
    # Post-norm: every layer's output is normalised (mean 0, variance 1 before the affine part).
    assert torch.allclose(out.mean(-1), torch.zeros(1, 3), atol=1e-5)


# ----------------------------------------------------------------------------- positions (§3.5)

def test_sinusoidal_encoding_is_the_formula_in_float64() -> None:
    d_model, n = 64, 3000
    table = sinusoid_table(n, d_model).double()
    pos = torch.arange(n, dtype=torch.float64)[:, None]
    for i in range(d_model // 2):
        angle = pos[:, 0] / 10000 ** (2 * i / d_model)
        assert torch.allclose(table[:, 2 * i], torch.sin(angle), atol=1e-6)
        assert torch.allclose(table[:, 2 * i + 1], torch.cos(angle), atol=1e-6)
    assert table.abs().max() <= 1.0
    # A spot check against the formula written out by hand.
    assert table[7, 10].item() == pytest.approx(math.sin(7 / 10000 ** (10 / 64)), abs=1e-7)


def test_sinusoidal_positions_extend_beyond_max_positions() -> None:
    model = tiny_model(max_positions=8)
    src = torch.randint(3, 50, (1, 20))
    logits = model(src, torch.randint(3, 50, (1, 30)))
    assert torch.isfinite(logits).all()
    assert torch.allclose(model.target_embeddings.positions(30), sinusoid_table(30, 32))


def test_a_long_input_to_a_bf16_model_changes_nothing_in_it() -> None:
    # A forward pass past the table must not regrow it (in float32, as it once did): that broke
    # every later call of a bfloat16 model ("mat1 and mat2 must have the same dtype").
    model = tiny_model(max_positions=8).to(torch.bfloat16)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    tables = [m.table.clone() for m in (model.source_embeddings.positions, model.target_embeddings.positions)]
    src = torch.randint(3, 50, (1, 5))
    before = model(src, torch.randint(3, 50, (1, 4)))
    long = model(torch.randint(3, 50, (1, 20)), torch.randint(3, 50, (1, 30)))
    assert long.dtype == torch.bfloat16 and torch.isfinite(long.float()).all()
    for module, table in zip((model.source_embeddings.positions, model.target_embeddings.positions), tables):
        assert module.table.dtype == torch.bfloat16 and torch.equal(module.table, table)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    torch.manual_seed(0)
    assert torch.equal(model(src, before.argmax(-1)), model(src, before.argmax(-1)))


def test_learned_positions_are_table_3_row_e_with_a_clear_limit() -> None:
    model = tiny_model(positional_encoding="learned", max_positions=8)
    assert model(torch.randint(3, 50, (2, 8)), torch.randint(3, 50, (2, 8))).shape == (2, 8, 50)
    with pytest.raises(ValueError, match="max_positions"):
        model(torch.randint(3, 50, (2, 9)), torch.randint(3, 50, (2, 3)))


# ----------------------------------------------------------------------------- dropout (§5.4)

@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_dropout_zeroes_a_fraction_p_scales_the_rest_and_routes_gradients_through_them(dtype) -> None:
    torch.manual_seed(0)
    dropout = Dropout(0.3).train()
    x = torch.full((400, 500), 2.0, dtype=dtype, requires_grad=True)
    y = dropout(x)
    kept = y != 0
    assert y.dtype == dtype
    assert abs(kept.float().mean().item() - 0.7) < 0.005  # 200,000 draws: 5 standard deviations
    assert torch.allclose(y[kept].float(), torch.tensor(2.0 / 0.7), rtol=1e-2)
    y.sum().backward()
    assert torch.equal(x.grad != 0, kept)
    assert torch.allclose(x.grad[kept].float(), torch.tensor(1 / 0.7), rtol=1e-2)
    assert not torch.equal(dropout(x), y)  # a new mask each call


def test_dropout_is_the_identity_in_evaluation_and_at_p_0_and_refuses_p_1() -> None:
    x = torch.randn(3, 4)
    assert Dropout(0.5).eval()(x) is x
    assert Dropout(0.0).train()(x) is x
    with pytest.raises(ValueError, match="dropout must be in"):
        Dropout(1.0)


# ----------------------------------------------------------------------------- masks and invariances

def test_look_ahead_mask_is_lower_triangular_and_offsets_for_the_cache() -> None:
    assert torch.equal(look_ahead_mask(4, 4), torch.ones(4, 4, dtype=torch.bool).tril())
    assert torch.equal(look_ahead_mask(2, 5), torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]], dtype=torch.bool))


def test_no_future_leakage_in_values_and_gradients() -> None:
    model = tiny_model()
    g = torch.Generator().manual_seed(1)
    src, tgt = random_tokens(2, 7, g), random_tokens(2, 9, g)
    t = 4
    changed = tgt.clone()
    changed[:, t + 1:] = random_tokens(2, 9 - t - 1, g)
    before, after = model(src, tgt), model(src, changed)
    assert torch.allclose(before[:, : t + 1], after[:, : t + 1], atol=1e-6)
    assert not torch.allclose(before[:, t + 1:], after[:, t + 1:])

    embedded = {}

    def keep_output(module, inputs, output):
        output.retain_grad()
        embedded["target"] = output

    handle = model.target_embeddings.register_forward_hook(keep_output)
    model(src, tgt)[:, t].sum().backward()
    handle.remove()
    grad = embedded["target"].grad
    assert grad[:, : t + 1].abs().sum() > 0
    assert torch.equal(grad[:, t + 1:], torch.zeros_like(grad[:, t + 1:]))


def test_extra_padding_leaves_real_positions_unchanged() -> None:
    model = tiny_model()
    g = torch.Generator().manual_seed(2)
    src, tgt = random_tokens(1, 6, g), random_tokens(1, 5, g)
    reference = model(src, tgt)
    padded_src = torch.cat([src, torch.full((1, 4), PAD)], dim=1)
    padded_tgt = torch.cat([tgt, torch.full((1, 3), PAD)], dim=1)
    assert torch.allclose(model(padded_src, tgt), reference, atol=1e-5)
    assert torch.allclose(model(src, padded_tgt)[:, :5], reference, atol=1e-5)
    assert torch.allclose(model(padded_src, padded_tgt)[:, :5], reference, atol=1e-5)


def test_a_sentence_does_not_depend_on_its_batch() -> None:
    model = tiny_model()
    g = torch.Generator().manual_seed(3)
    sentences = [(random_tokens(1, s, g)[0], random_tokens(1, t, g)[0]) for s, t in [(5, 4), (9, 11), (2, 3), (7, 1)]]
    src = nn.utils.rnn.pad_sequence([s for s, _ in sentences], batch_first=True, padding_value=PAD)
    tgt = nn.utils.rnn.pad_sequence([t for _, t in sentences], batch_first=True, padding_value=PAD)
    batched = model(src, tgt)
    for row, (s, t) in enumerate(sentences):
        alone = model(s[None], t[None])[0]
        assert torch.allclose(batched[row, : len(t)], alone, atol=1e-5)


def test_an_all_padding_row_gives_finite_output_and_leaves_others_alone() -> None:
    model = tiny_model()
    g = torch.Generator().manual_seed(4)
    src, tgt = random_tokens(2, 5, g), random_tokens(2, 4, g)
    reference = model(src[:1], tgt[:1])
    src[1] = PAD
    tgt[1] = PAD
    logits = model(src, tgt)
    assert torch.isfinite(logits).all()
    assert torch.allclose(logits[0], reference[0], atol=1e-5)
    # The explicit path (which returns weights) must be as safe as the fused kernel.
    from aiayn.model import AttentionMaps

    maps = AttentionMaps()
    assert torch.isfinite(model(src, tgt, record=maps)).all()
    assert all(torch.isfinite(w).all() for w in maps.encoder + maps.cross + maps.decoder_self)


def test_key_padding_mask_shape_and_meaning() -> None:
    mask = key_padding_mask(padding_mask(torch.tensor([[5, 6, PAD], [PAD, PAD, PAD]]), PAD))
    assert mask.shape == (2, 1, 1, 3)
    assert mask[0, 0, 0].tolist() == [True, True, False]
    assert mask[1].all()  # all-padding row: attends everywhere rather than to nothing


# ----------------------------------------------------------------------------- parity with torch.nn

def copy_attention(ours: MultiHeadAttention, theirs: nn.MultiheadAttention) -> None:
    d = theirs.embed_dim
    with torch.no_grad():
        ours.q_proj.weight.copy_(theirs.in_proj_weight[:d])
        ours.q_proj.bias.copy_(theirs.in_proj_bias[:d])
        ours.kv_proj.weight.copy_(theirs.in_proj_weight[d:])
        ours.kv_proj.bias.copy_(theirs.in_proj_bias[d:])
        ours.out_proj.weight.copy_(theirs.out_proj.weight)
        ours.out_proj.bias.copy_(theirs.out_proj.bias)


def copy_linear_and_norm(pairs: list[tuple[nn.Module, nn.Module]]) -> None:
    with torch.no_grad():
        for ours, theirs in pairs:
            ours.weight.copy_(theirs.weight)
            ours.bias.copy_(theirs.bias)


def randomise(module: nn.Module) -> None:
    # LayerNorm starts as the identity affine map; make every parameter count in the comparison.
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.normal_(0, 0.3)


def test_multi_head_attention_matches_torch() -> None:
    torch.manual_seed(0)
    theirs = nn.MultiheadAttention(32, 4, batch_first=True).eval()
    randomise(theirs)
    ours = MultiHeadAttention(32, 4)
    copy_attention(ours, theirs)
    query, memory = torch.randn(3, 5, 32), torch.randn(3, 7, 32)
    real = torch.ones(3, 7, dtype=torch.bool)
    real[1, 4:] = False
    real[2, 2:] = False
    expected, _ = theirs(query, memory, memory, key_padding_mask=~real)
    got = ours(query, *ours.project_key_value(memory), key_padding_mask(real))
    assert torch.allclose(got, expected, atol=1e-5)
    weights: list[torch.Tensor] = []
    got_explicit = ours(query, *ours.project_key_value(memory), key_padding_mask(real), record=weights)
    _, expected_weights = theirs(query, memory, memory, key_padding_mask=~real, average_attn_weights=False)
    assert torch.allclose(got_explicit, expected, atol=1e-5)
    assert torch.allclose(weights[0], expected_weights, atol=1e-5)


def test_encoder_layer_matches_torch() -> None:
    torch.manual_seed(0)
    config = ModelConfig.preset("tiny", vocab_size=50)
    theirs = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.1, activation="relu", batch_first=True, norm_first=False).eval()
    randomise(theirs)
    ours = EncoderLayer(config).eval()
    copy_attention(ours.self_attention, theirs.self_attn)
    copy_linear_and_norm([(ours.feed_forward.linear1, theirs.linear1), (ours.feed_forward.linear2, theirs.linear2),
                          (ours.self_attention_residual.norm, theirs.norm1), (ours.feed_forward_residual.norm, theirs.norm2)])
    x = torch.randn(2, 6, 32)
    real = torch.ones(2, 6, dtype=torch.bool)
    real[1, 3:] = False
    expected = theirs(x, src_key_padding_mask=~real)
    got = ours(x, key_padding_mask(real))
    assert torch.allclose(got[0], expected[0], atol=1e-5)
    assert torch.allclose(got[1, :3], expected[1, :3], atol=1e-5)  # torch's fast path zeroes padded rows


def test_decoder_layer_matches_torch() -> None:
    torch.manual_seed(0)
    config = ModelConfig.preset("tiny", vocab_size=50)
    theirs = nn.TransformerDecoderLayer(32, 4, 64, dropout=0.1, activation="relu", batch_first=True, norm_first=False).eval()
    randomise(theirs)
    ours = DecoderLayer(config).eval()
    copy_attention(ours.self_attention, theirs.self_attn)
    copy_attention(ours.cross_attention, theirs.multihead_attn)
    copy_linear_and_norm([(ours.feed_forward.linear1, theirs.linear1), (ours.feed_forward.linear2, theirs.linear2),
                          (ours.self_attention_residual.norm, theirs.norm1), (ours.cross_attention_residual.norm, theirs.norm2),
                          (ours.feed_forward_residual.norm, theirs.norm3)])
    x, memory = torch.randn(2, 5, 32), torch.randn(2, 7, 32)
    real = torch.ones(2, 7, dtype=torch.bool)
    real[0, 5:] = False
    causal = nn.Transformer.generate_square_subsequent_mask(5)
    expected = theirs(x, memory, tgt_mask=causal, tgt_is_causal=True, memory_key_padding_mask=~real)
    got = ours(x, ours.cross_attention.project_key_value(memory), key_padding_mask(real), look_ahead_mask(5, 5))
    assert torch.allclose(got, expected, atol=1e-5)


# ----------------------------------------------------------------------------- encode / decode

def test_encode_then_decode_equals_forward() -> None:
    model = tiny_model()
    g = torch.Generator().manual_seed(5)
    src, tgt = random_tokens(3, 6, g), random_tokens(3, 4, g)
    src[0, 4:] = PAD
    memory = model.encode(src)
    assert memory.shape == (3, 6, 32)
    assert torch.equal(model.decode(tgt, memory, padding_mask(src, PAD)), model(src, tgt))


@pytest.mark.parametrize("norm_placement", ["post", "pre"])
def test_cached_decoding_one_token_at_a_time_equals_the_full_pass(norm_placement: str) -> None:
    model = tiny_model(norm_placement=norm_placement)
    g = torch.Generator().manual_seed(6)
    src, tgt = random_tokens(2, 6, g), random_tokens(2, 5, g)
    src[1, 3:] = PAD
    full = model(src, tgt)
    memory = model.encode(src)
    cache = model.new_cache(memory, padding_mask(src, PAD))
    steps = [model.decode(tgt[:, t: t + 1], cache=cache) for t in range(5)]
    assert cache.length == 5
    assert torch.allclose(torch.cat(steps, dim=1), full, atol=1e-5)


def test_recorded_attention_weights_are_distributions_per_layer_and_head() -> None:
    from aiayn.model import AttentionMaps

    model = tiny_model()
    src = torch.tensor([[5, 6, 7, PAD]])
    maps = AttentionMaps()
    logits = model(src, torch.tensor([[BOS, 8, 9]]), record=maps)
    assert torch.allclose(logits, model(src, torch.tensor([[BOS, 8, 9]])), atol=1e-5)
    assert len(maps.encoder) == len(maps.cross) == len(maps.decoder_self) == 2
    assert maps.cross[0].shape == (1, 4, 3, 4)
    assert torch.allclose(maps.cross[-1].sum(-1), torch.ones(1, 4, 3))
    assert maps.cross[-1][..., 3].abs().max() == 0  # no weight on padding
    assert maps.decoder_self[0][0, 0].triu(1).abs().max() == 0  # no weight on the future


# ----------------------------------------------------------------------------- which attention kernel

def test_the_decoder_gives_its_look_ahead_to_the_fused_kernel_as_is_causal(monkeypatch) -> None:
    """The fused kernel gets is_causal for the decoder's self-attention (flash attention on CUDA,
    which skips the masked half) and padding masks elsewhere; the explicit path agrees with it."""
    from aiayn.model import transformer

    calls = []
    fused = torch.nn.functional.scaled_dot_product_attention

    def spy(q, k, v, attn_mask=None, is_causal=False):
        calls.append((q.size(-2), k.size(-2), attn_mask is not None, is_causal))
        return fused(q, k, v, attn_mask=attn_mask, is_causal=is_causal)

    monkeypatch.setattr(transformer.F, "scaled_dot_product_attention", spy)
    model = tiny_model()
    g = torch.Generator().manual_seed(9)
    src, tgt = random_tokens(2, 70, g), random_tokens(2, 66, g)
    src[1, 50:] = PAD
    logits = model(src, tgt)
    layers = model.config.n_encoder_layers
    assert calls[:layers] == [(70, 70, True, False)] * layers  # encoder: the padding mask
    assert calls[layers:layers + 2] == [(66, 66, False, True), (66, 70, True, False)]  # decoder: causal, cross
    from aiayn.model import AttentionMaps

    assert torch.allclose(model(src, tgt, record=AttentionMaps()), logits, atol=1e-5)  # the explicit path


def test_cuda_kernel_choices_are_set_for_cuda_alone() -> None:
    from aiayn.runtime import use_cuda_kernels

    before = (torch.backends.cuda.cudnn_sdp_enabled(), torch.get_float32_matmul_precision())
    try:
        use_cuda_kernels(torch.device("cpu"))
        assert (torch.backends.cuda.cudnn_sdp_enabled(), torch.get_float32_matmul_precision()) == before
        use_cuda_kernels(torch.device("cuda", 0))  # flags only: no GPU needed to set them
        assert not torch.backends.cuda.cudnn_sdp_enabled()  # a graph built per shape: never on the hot path
        assert torch.backends.cuda.flash_sdp_enabled() and torch.backends.cuda.mem_efficient_sdp_enabled()
        assert torch.get_float32_matmul_precision() == "high"  # TF32
    finally:
        torch.backends.cuda.enable_cudnn_sdp(before[0])
        torch.set_float32_matmul_precision(before[1])


# ----------------------------------------------------------------------------- it learns

def test_tiny_model_overfits_a_handful_of_pairs() -> None:
    torch.manual_seed(0)
    model = Transformer(ModelConfig.preset("tiny", vocab_size=20, dropout=0.0)).train()
    pairs = [([5, 6, 7], [8, 9]), ([7, 6], [10, 11, 12]), ([9, 9, 5, 4], [13]), ([4, 8], [14, 15, 16, 17])]
    src = nn.utils.rnn.pad_sequence([torch.tensor(s + [EOS]) for s, _ in pairs], batch_first=True)
    tgt_in = nn.utils.rnn.pad_sequence([torch.tensor([BOS] + t) for _, t in pairs], batch_first=True)
    tgt_out = nn.utils.rnn.pad_sequence([torch.tensor(t + [EOS]) for _, t in pairs], batch_first=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3, betas=(0.9, 0.98), eps=1e-9)
    for _ in range(300):
        loss = nn.functional.cross_entropy(model(src, tgt_in).transpose(1, 2), tgt_out, ignore_index=PAD)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if loss.item() < 0.05:
            break
    assert loss.item() < 0.05
    assert torch.equal(model.eval()(src, tgt_in).argmax(-1)[tgt_out != PAD], tgt_out[tgt_out != PAD])
