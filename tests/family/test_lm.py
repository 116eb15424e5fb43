"""The decoder as a language model (GPT's recipe): training, perplexity, cached generation."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from aiayn.cli import main
from aiayn.decoding.search import Sampling
from aiayn.family.lm import TextGenerator, perplexity


@pytest.fixture(scope="module")
def lm_run(number_corpus, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("lm") / "run"
    assert main(["train-lm", "--text", str(number_corpus["train_en"]), "--valid", str(number_corpus["valid_en"]),
                 "--out", str(run), "--preset", "tiny", "--vocab-size", "300", "--batch-tokens", "1500",
                 "--warmup", "50", "--max-steps", "250", "--eval-every", "125", "--log-every", "50"]) == 0
    return run


def test_the_model_learns_the_language(lm_run: Path, number_corpus) -> None:
    generator = TextGenerator.from_checkpoint(lm_run)
    texts = number_corpus["valid_en"].read_text().splitlines()
    ppl = perplexity(generator.model, generator.tokenizer, texts, generator.max_length)
    assert 1.0 < ppl < 8.0  # far below the 300-piece vocabulary's uniform guess
    words = {w for line in number_corpus["train_en"].read_text().splitlines() for w in line.replace("-", " ").split()}
    continuation = generator.generate("four hundred")
    assert continuation.startswith("four hundred") and set(continuation.replace("-", " ").split()) <= words


def test_cached_generation_equals_uncached(lm_run: Path) -> None:
    generator = TextGenerator.from_checkpoint(lm_run)
    prompt = generator.tokenizer.encode(["seven thousand"])[0]
    assert generator.generate_ids(prompt, 20) == generator.generate_ids(prompt, 20, use_cache=False)
    sampled = [generator.generate_ids(prompt, 20, Sampling(0.9, top_k=5, seed=s), use_cache=c)
               for s in (3, 3) for c in (True, False)]
    assert sampled[0] == sampled[1]


def test_the_cli_generates(lm_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["generate", "--checkpoint", str(lm_run), "--prompt", "twenty", "--sample", "--seed", "1",
                 "--n", "2", "--top-p", "0.9"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and all(line.startswith("twenty") for line in lines)


def test_sampling_without_a_seed_differs_from_run_to_run(lm_run: Path) -> None:
    generator = TextGenerator.from_checkpoint(lm_run)
    runs = {tuple(generator.generate_ids([], 20, Sampling(2.0))) for _ in range(6)}
    assert len(runs) > 1


@pytest.mark.parametrize("arguments, named", [
    (["--prompt", "seven " * 200], "--prompt"),
    (["--prompt", "seven", "--n", "2"], "--n 2 without --sample"),
    (["--prompt", "seven", "--device", "cuda:7"], "cuda"),
])
def test_bad_generate_arguments_are_named(lm_run: Path, arguments: list[str], named: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["generate", "--checkpoint", str(lm_run), *arguments]) == 2
    err = capsys.readouterr().err
    assert named in err and "Traceback" not in err


def test_layers_sets_the_decoder_depth(number_corpus, tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert main(["train-lm", "--text", str(number_corpus["train_en"]), "--out", str(run), "--preset", "tiny",
                 "--vocab-size", "300", "--batch-tokens", "1500", "--max-steps", "1", "--layers", "3"]) == 0
    model = TextGenerator.from_checkpoint(run).model
    assert (model.config.n_decoder_layers, model.config.n_encoder_layers) == (3, 0)


def test_translator_verbs_name_a_language_model_checkpoint(lm_run: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["attention", "--checkpoint", str(lm_run), "--src", "seven", "--out", str(tmp_path / "a.png")]) == 2
    err = capsys.readouterr().err
    assert "a language-model checkpoint" in err and "draws translator, vision-transformer ones" in err
    assert main(["serve", "--checkpoint", str(lm_run), "--port", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "a language-model checkpoint; aiayn serve takes translator, classifier ones" in err


def test_prompts_of_unequal_length_are_refused_and_generation_stops_at_its_limit(lm_run: Path) -> None:
    from aiayn.family.lm import PromptDecoder

    generator = TextGenerator.from_checkpoint(lm_run)
    with pytest.raises(ValueError, match="one length"):
        PromptDecoder(generator.model, torch.tensor([[1, 5, 6], [1, 5, 0]]), use_cache=True)
    # </s> as the padding id, which is never an output: generation runs to max_new_tokens.
    generator.model.config = dataclasses.replace(generator.model.config, eos_id=generator.model.config.pad_id)
    assert len(generator.generate_ids([5, 6], max_new_tokens=7)) == 7
