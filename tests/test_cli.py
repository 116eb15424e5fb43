"""The command line parses and dispatches."""
from __future__ import annotations

import gzip
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from aiayn.cli import main


def test_params_prints_a_breakdown_and_the_paper_comparison(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["params", "--preset", "base", "--vocab-size", "37000"]) == 0
    out = capsys.readouterr().out
    for component in ("embeddings", "encoder", "decoder", "total"):
        assert component in out
    assert "18,944,000" in out  # 37000 x 512, counted once although shared three ways
    assert "paper: 65M" in out


def test_help_lists_the_verbs() -> None:
    result = subprocess.run([sys.executable, "-m", "aiayn.cli", "--help"], capture_output=True, text=True, check=True)
    assert "params" in result.stdout


VERBS = ["demo", "download", "prepare", "train", "translate", "evaluate", "attention", "serve", "export", "import", "pretrain-mlm",
         "train-classifier", "classify", "train-lm", "generate", "train-vit", "average", "plot", "params"]


def test_python_m_aiayn_lists_every_verb_in_order() -> None:
    result = subprocess.run([sys.executable, "-m", "aiayn", "--help"], capture_output=True, text=True, check=True)
    listed = [line.split()[0] for line in result.stdout.splitlines() if re.match(r"    \S", line)]
    assert listed == VERBS


def test_a_usage_error_is_one_line_with_status_2(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["no-such-verb"], ["train", "--warmup", "0", "--out", "run"], ["train-vit", "--out", "r", "--seed", "-1"]):
        with pytest.raises(SystemExit) as stop:
            main(argv)
        err = capsys.readouterr().err
        assert stop.value.code == 2 and err.count("\n") == 1 and err.startswith("aiayn")


def test_the_shape_flags_change_the_preset_field_by_field(number_corpus: dict[str, Path], tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert main(["train", "--preset", "tiny", "--layers", "1", "--d-model", "48", "--d-ff", "40", "--heads", "3",
                 "--vocab-size", "300", "--batch-tokens", "600", "--max-steps", "1", "--out", str(run),
                 "--train-src", str(number_corpus["train_en"]), "--train-tgt", str(number_corpus["train_de"])]) == 0
    model = json.loads((run / "config.json").read_text())["model"]
    assert (model["n_encoder_layers"], model["n_decoder_layers"], model["d_model"], model["d_ff"],
            model["n_heads"], model["dropout"]) == (1, 1, 48, 40, 3, 0.1)  # the rest is still tiny's


def test_a_lowercase_run_writes_lowercase_and_is_scored_case_insensitively(
        number_corpus: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run, upper = tmp_path / "run", tmp_path / "valid.EN"
    upper.write_text(number_corpus["valid_en"].read_text().upper())
    assert main(["train", "--preset", "tiny", "--lowercase", "--vocab-size", "300", "--batch-tokens", "600",
                 "--max-steps", "2", "--eval-every", "2", "--bleu-sentences", "4", "--out", str(run),
                 "--train-src", str(number_corpus["train_en"]), "--train-tgt", str(number_corpus["train_de"]),
                 "--valid-src", str(number_corpus["valid_en"]), "--valid-tgt", str(number_corpus["valid_de"])]) == 0
    assert json.loads((run / "config.json").read_text())["training"]["lowercase"] is True
    validations = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()
                   if "bleu_signature" in line]
    assert validations and all("case:lc" in v["bleu_signature"] for v in validations)
    capsys.readouterr()
    for source in (number_corpus["valid_en"], upper):  # the same translations whatever the input's case
        assert main(["evaluate", "--checkpoint", str(run), "--src", str(source), "--ref",
                     str(number_corpus["valid_de"]), "--hyp", str(tmp_path / f"{source.name}.hyp")]) == 0
    assert capsys.readouterr().out.count("case:lc") == 4  # sacreBLEU's and chrF's signatures, twice
    hypotheses = [(tmp_path / f"{s.name}.hyp").read_text() for s in (number_corpus["valid_en"], upper)]
    assert hypotheses[0] == hypotheses[1] == hypotheses[0].lower()


def test_a_moses_text_run_is_given_raw_text_and_writes_plain_text(
        number_corpus: dict[str, Path], tmp_path: Path) -> None:
    from aiayn.data.moses import MosesTextTokenizer, moses_detokenize, moses_text
    from aiayn.data.tokenizer import Tokenizer
    from aiayn.decoding.translator import Translator
    from aiayn.interop.common import InteropError
    from aiayn.interop.ctranslate2 import export_ctranslate2
    from aiayn.interop.huggingface import export_huggingface

    raw, folder = {}, tmp_path / "multi30k"  # a Multi30k folder of the number words
    folder.mkdir()
    for name, path in number_corpus.items():  # cased, with punctuation the Moses rules split off
        raw[name] = folder / f"{name.replace('valid', 'val').replace('_', '.')}.gz"
        with gzip.open(raw[name], "wt", encoding="utf-8") as f:
            f.writelines(f'{line.capitalize()}, "{line}".\n' for line in path.read_text().splitlines())
    run = tmp_path / "run"
    assert main(["train", "--preset", "tiny", "--multi30k", "en-de", "--data-dir", str(folder), "--moses-text",
                 "--vocab-size", "300", "--batch-tokens", "600", "--max-steps", "2", "--eval-every", "2",
                 "--bleu-sentences", "4", "--out", str(run)]) == 0  # the pair names the languages
    training = json.loads((run / "config.json").read_text())["training"]
    assert training["moses_text"] is True and (training["source_lang"], training["target_lang"]) == ("en", "de")
    validations = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()
                   if "bleu_signature" in line]
    assert validations and all("case:lc" in v["bleu_signature"] for v in validations)  # through the Moses text
    translator = Translator.from_checkpoint(run)  # no --moses-text: the checkpoint says so
    assert isinstance(translator.tokenizer, MosesTextTokenizer) and isinstance(translator.tokenizer.tokenizer, Tokenizer)
    plain = Translator(translator.model, translator.tokenizer.tokenizer)
    sources = gzip.open(raw["valid_en"], "rt", encoding="utf-8").read().splitlines()[:4]
    expected = moses_detokenize(plain.translate(moses_text(sources, "en"), beam=2), "de")
    assert translator.translate(sources, beam=2) == expected
    again = Translator.from_checkpoint(run, moses_text=True)  # the flag as well: wrapped once
    assert isinstance(again.tokenizer.tokenizer, Tokenizer) and again.translate(sources, beam=2) == expected
    for export, name in ((export_ctranslate2, "ct2"), (export_huggingface, "hf")):
        with pytest.raises(InteropError, match="Moses-tokenised"):
            export(run, tmp_path / name)
        assert not (tmp_path / name).exists()
    # `aiayn prepare --moses-text` makes the same data, and a run on it takes the data's languages.
    data, second = tmp_path / "data", tmp_path / "second"
    assert main(["prepare", "--moses-text", "--source-lang", "en", "--target-lang", "de", "--vocab-size", "300",
                 "--out", str(data), "--train-src", str(raw["train_en"]), "--train-tgt", str(raw["train_de"]),
                 "--valid-src", str(raw["valid_en"]), "--valid-tgt", str(raw["valid_de"])]) == 0
    assert (data / "train.src.bin").read_bytes() == (run / "data" / "train.src.bin").read_bytes()
    assert main(["train", "--preset", "tiny", "--batch-tokens", "600", "--max-steps", "1", "--data", str(data),
                 "--out", str(second)]) == 0
    training = json.loads((second / "config.json").read_text())["training"]
    assert training["moses_text"] is True and (training["source_lang"], training["target_lang"]) == ("en", "de")
