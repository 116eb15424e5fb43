"""The descendants are built from the translator's own classes (§3), and behave as the paper's
parts do: padding changes nothing, cached generation equals uncached, patches are the image."""
from __future__ import annotations

import pytest
import torch

from aiayn.model import ModelConfig, Transformer
from aiayn.model.config import POOLINGS
from aiayn.model.family import (
    EncoderClassifier,
    ImageShape,
    LanguageModel,
    MaskedLanguageModel,
    VisionTransformer,
    mask_tokens,
)
from aiayn.model.transformer import Decoder, DecoderLayer, Embeddings, Encoder, EncoderLayer

CONFIG = ModelConfig.preset("tiny", vocab_size=60)


def test_the_descendants_are_made_of_the_translators_classes() -> None:
    translator = Transformer(CONFIG)
    classifier, mlm, lm = EncoderClassifier(CONFIG, 2), MaskedLanguageModel(CONFIG), LanguageModel(CONFIG)
    vit = VisionTransformer(CONFIG, ImageShape(), 10)
    for encoder in (classifier.body.encoder, mlm.body.encoder, vit.encoder):
        assert type(encoder) is Encoder and all(type(layer) is EncoderLayer for layer in encoder.layers)
    assert type(lm.decoder) is Decoder and all(type(layer) is DecoderLayer for layer in lm.decoder.layers)
    assert all(layer.cross_attention is None for layer in lm.decoder.layers)  # GPT: no encoder to attend to
    assert type(classifier.body.embeddings) is Embeddings and type(lm.embeddings) is Embeddings

    def shapes(module: torch.nn.Module) -> dict[str, tuple[int, ...]]:
        return {name: tuple(p.shape) for name, p in module.named_parameters()}

    assert shapes(classifier.body.encoder) == shapes(translator.encoder) == shapes(vit.encoder)
    decoder = {k: v for k, v in shapes(translator.decoder).items() if "cross_attention" not in k}
    assert shapes(lm.decoder) == decoder
    assert lm.output_projection.weight is lm.embeddings.tokens.weight  # §3.4's sharing


@pytest.mark.parametrize("pooling", POOLINGS)
def test_padding_changes_no_classification(pooling: str) -> None:
    torch.manual_seed(0)
    model = EncoderClassifier(CONFIG, 3, pooling).eval()
    sentence = torch.tensor([[1, 7, 8, 9]])
    padded = torch.tensor([[1, 7, 8, 9, 0, 0, 0], [1, 5, 6, 10, 11, 12, 13]])
    assert torch.allclose(model(sentence)[0], model(padded)[0], atol=1e-5)


def test_mean_pooling_reads_every_token_and_cls_pooling_the_first() -> None:
    torch.manual_seed(0)
    cls, mean = EncoderClassifier(CONFIG, 2, "cls").eval(), EncoderClassifier(CONFIG, 2, "mean").eval()
    mean.load_state_dict(cls.state_dict())
    tokens = torch.tensor([[1, 7, 8, 9]])
    hidden = cls.body(tokens)
    by_hand = {"mean": hidden.mean(dim=1), "cls": hidden[:, 0]}
    by_hand = {k: cls.head(torch.tanh(cls.pooler(v))) for k, v in by_hand.items()}
    assert torch.allclose(mean(tokens), by_hand["mean"], atol=1e-6)
    assert torch.allclose(cls(tokens), by_hand["cls"], atol=1e-6)
    assert not torch.allclose(by_hand["cls"], by_hand["mean"], atol=1e-3)
    assert torch.isfinite(mean(torch.tensor([[0, 0, 0]]))).all()  # a row of padding alone
    with pytest.raises(ValueError, match="pooling"):
        EncoderClassifier(CONFIG, 2, "max")


def test_cached_generation_equals_the_full_pass() -> None:
    torch.manual_seed(0)
    model = LanguageModel(CONFIG).eval()
    tokens = torch.randint(3, 60, (2, 9))
    full = model(tokens)
    cache = model.new_cache()
    steps = [model(tokens[:, :4], cache)] + [model(tokens[:, t:t + 1], cache) for t in range(4, 9)]
    assert cache.length == 9 and torch.allclose(torch.cat(steps, dim=1), full, atol=1e-5)


def test_a_token_never_sees_the_future() -> None:
    torch.manual_seed(0)
    model = LanguageModel(CONFIG).eval()
    tokens = torch.randint(3, 60, (1, 8))
    changed = tokens.clone()
    changed[0, 5:] = 4
    assert torch.allclose(model(tokens)[0, :5], model(changed)[0, :5], atol=1e-6)


def test_patches_are_the_image_row_by_row() -> None:
    model = VisionTransformer(CONFIG, ImageShape(size=4, patch=2), 10)
    image = torch.arange(16.0).reshape(1, 1, 4, 4)
    patches = model.patchify(image)
    assert patches.shape == (1, 4, 4)
    assert patches[0, 0].tolist() == [0, 1, 4, 5] and patches[0, 3].tolist() == [10, 11, 14, 15]
    assert model(torch.rand(3, 1, 4, 4)).shape == (3, 10)


@pytest.mark.parametrize("rate", [None, 0.4])  # None: the default, BERT's 15%
def test_masking_chooses_the_rate_then_80_10_10(rate: float | None) -> None:
    tokens = torch.randint(5, 60, (400, 100))
    tokens[:, 0] = 1
    generator = torch.Generator().manual_seed(0)
    inputs, labels = mask_tokens(tokens, mask_id=4, vocab_size=60, special=torch.tensor([0, 1, 2, 3, 4]),
                                 generator=generator, **({} if rate is None else {"rate": rate}))
    chosen = labels != -100
    expected = (rate or 0.15) * 0.99  # the first column is [CLS], never chosen
    assert abs(chosen.float().mean().item() - expected) < 3 * (expected * (1 - expected) / chosen.numel()) ** 0.5
    assert not chosen[:, 0].any()
    assert torch.equal(labels[chosen], tokens[chosen])
    masked = (inputs[chosen] == 4).float().mean().item()
    kept = (inputs[chosen] == tokens[chosen]).float().mean().item()
    assert abs(masked - 0.8) < 0.02 and abs(kept - 0.1 - 0.1 / 56) < 0.02


def test_a_random_replacement_is_never_a_special_token() -> None:
    special = torch.tensor([0, 1, 2, 3, 9])  # <mask> at 9: special ids need not be 0..4
    tokens = torch.randint(10, 20, (200, 50))
    inputs, labels = mask_tokens(tokens, mask_id=9, vocab_size=20, special=special,
                                 generator=torch.Generator().manual_seed(0))
    replaced = (labels != -100) & (inputs != 9) & (inputs != tokens)
    assert replaced.sum() > 50 and not torch.isin(inputs[replaced], special).any()
