"""The config fields added for imported Marian models (activation, output_bias): off by default,
so the model stays the paper's and checkpoints saved before the fields existed load unchanged."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
import torch.nn.functional as F

from aiayn import ModelConfig, Transformer, Translator
from aiayn.checkpoint import resolve_checkpoint


def test_defaults_are_the_papers_relu_and_no_output_bias() -> None:
    model = Transformer(ModelConfig.preset("tiny", vocab_size=50))
    assert model.config.activation == "relu" and model.output_projection.bias is None
    assert "output_projection.bias" not in model.state_dict()


def test_swish_is_x_sigmoid_x_and_the_output_bias_is_added() -> None:
    torch.manual_seed(0)
    model = Transformer(ModelConfig.preset("tiny", vocab_size=50, activation="swish", output_bias=True)).eval()
    feed_forward = model.encoder.layers[0].feed_forward
    x = torch.randn(2, 3, 32)
    hidden = feed_forward.linear1(x)
    assert torch.allclose(feed_forward(x), feed_forward.linear2(hidden * torch.sigmoid(hidden)), atol=1e-6)
    assert model.output_projection.weight is model.source_embeddings.tokens.weight  # still tied (§3.4)
    src, tgt = torch.randint(3, 50, (2, 5)), torch.randint(3, 50, (2, 4))
    with torch.no_grad():
        without = model(src, tgt)
        model.output_projection.bias.normal_()
        assert torch.allclose(model(src, tgt), without + model.output_projection.bias, atol=1e-5)


def test_a_checkpoint_saved_before_the_fields_existed_loads_identically(trained_run: Path, tmp_path: Path) -> None:
    old = tmp_path / "old"
    shutil.copytree(resolve_checkpoint(trained_run), old)
    config = json.loads((old / "config.json").read_text())
    for field in ("activation", "output_bias"):
        del config["model"][field]
    (old / "config.json").write_text(json.dumps(config))
    loaded, current = Translator.from_checkpoint(old), Translator.from_checkpoint(trained_run)
    assert loaded.model.config == current.model.config
    texts = ["twenty-one", "four hundred twelve"]
    assert loaded.translate(texts, beam=4) == current.translate(texts, beam=4)


def test_gelu_is_the_exact_gelu() -> None:
    torch.manual_seed(0)
    feed_forward = Transformer(ModelConfig.preset("tiny", vocab_size=50, activation="gelu")).encoder.layers[0].feed_forward
    x = torch.randn(4, 32)
    assert torch.allclose(feed_forward(x), feed_forward.linear2(F.gelu(feed_forward.linear1(x))))
