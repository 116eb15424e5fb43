"""aiayn.decoding.ensemble: several models decoding as one, their next-token probabilities averaged."""
from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import pytest
import torch

from aiayn.cli import main
from aiayn.data.batching import pad
from aiayn.decoding.ensemble import Ensemble
from aiayn.decoding.search import _Decoder, beam_search, greedy_search
from aiayn.decoding.translator import Translator
from aiayn.model import Transformer

EOS = 2


@pytest.fixture(scope="module")
def model(trained_run: Path) -> Transformer:
    return Translator.from_checkpoint(trained_run).model


@pytest.fixture(scope="module")
def other(model: Transformer) -> Transformer:
    """The trained model with its weights disturbed: a second member that disagrees with the first."""
    torch.manual_seed(1)
    disturbed = copy.deepcopy(model)
    with torch.no_grad():
        for parameter in disturbed.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    return disturbed


@pytest.fixture(scope="module")
def src(trained_run: Path, number_corpus) -> torch.Tensor:
    tokenizer = Translator.from_checkpoint(trained_run).tokenizer
    ids = tokenizer.encode(number_corpus["valid_en"].read_text().splitlines()[:12])
    return pad([s + [EOS] for s in ids])


def test_a_model_twice_decodes_as_the_model_alone(model: Transformer, src: torch.Tensor) -> None:
    twice = Ensemble([model, copy.deepcopy(model)])
    assert greedy_search(twice, src) == greedy_search(model, src)
    alone, both = beam_search(model, src, 4, 0.6, n_best=2), beam_search(twice, src, 4, 0.6, n_best=2)
    assert [[h.tokens for h in s] for s in both] == [[h.tokens for h in s] for s in alone]
    assert [h.score for s in both for h in s] == pytest.approx([h.score for s in alone for h in s], abs=1e-4)


def test_each_step_is_the_log_of_the_members_mean_probability(model: Transformer, other: Transformer,
                                                              src: torch.Tensor) -> None:
    ensemble = Ensemble([model, other])
    decoder = _Decoder(ensemble, src, use_cache=True)
    prefix = torch.full((src.size(0), 1), model.config.bos_id)
    for _ in range(4):
        log_probs = decoder.step(prefix[:, -1])
        members = [m(src, prefix)[:, -1].float().log_softmax(-1).exp() for m in (model, other)]
        expected = ((members[0] + members[1]) / 2).log()
        expected[:, [model.config.pad_id, model.config.bos_id]] = float("-inf")
        torch.testing.assert_close(log_probs, expected, atol=1e-4, rtol=1e-4)
        assert not torch.allclose(members[0], members[1], atol=1e-3)  # the members do disagree
        prefix = torch.cat([prefix, log_probs.argmax(-1, keepdim=True)], dim=1)


def test_an_ensemble_decodes_alike_with_and_without_the_cache(model: Transformer, other: Transformer,
                                                              src: torch.Tensor) -> None:
    ensemble = Ensemble([model, other])
    assert greedy_search(ensemble, src) == greedy_search(ensemble, src, use_cache=False)
    cached, uncached = beam_search(ensemble, src, 3, 1.0), beam_search(ensemble, src, 3, 1.0, use_cache=False)
    assert [s[0].tokens for s in cached] == [s[0].tokens for s in uncached]


def test_an_ensemble_needs_one_vocabulary_and_two_models(model: Transformer) -> None:
    bigger = Transformer(dataclasses.replace(model.config, vocab_size=model.config.vocab_size + 1))
    with pytest.raises(ValueError, match="model 2 has vocab_size"):
        Ensemble([model, bigger])
    with pytest.raises(ValueError, match="at least 2"):
        Ensemble([model])


def test_cli_translates_and_evaluates_with_an_ensemble(trained_run: Path, number_corpus, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    source = number_corpus["valid_en"]
    outputs = {}
    for name, extra in (("alone", []), ("twice", ["--ensemble", str(trained_run)])):
        outputs[name] = tmp_path / f"{name}.de"
        assert main(["translate", "--checkpoint", str(trained_run), "--input", str(source),
                     "--output", str(outputs[name]), *extra]) == 0
    assert outputs["twice"].read_text() == outputs["alone"].read_text()
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(trained_run), "--ensemble", str(trained_run), str(trained_run),
                 "--src", str(source), "--ref", str(number_corpus["valid_de"]), "--beam", "2"]) == 0
    assert "sacreBLEU  BLEU = " in capsys.readouterr().out
