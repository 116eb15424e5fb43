"""Raw text to raw text: empty and over-long lines, order, n-best, attention, the CLI verbs."""
from __future__ import annotations

import io
import re
import sys
from pathlib import Path

import pytest

from aiayn.cli import main
from aiayn.decoding.translator import Translator, length_sorted_batches


@pytest.fixture(scope="module")
def translator(trained_run) -> Translator:
    return Translator.from_checkpoint(trained_run)


def test_empty_lines_give_empty_lines_and_order_is_kept(translator: Translator) -> None:
    texts = ["twenty-one", "", "nine hundred ninety-nine thousand nine hundred ninety-nine", "", "seven"]
    out = translator.translate(texts, beam=4)
    assert len(out) == 5 and out[1] == "" and out[3] == ""
    assert out[0] == translator.translate(["twenty-one"], beam=4)[0]
    assert out[4] == translator.translate(["seven"], beam=4)[0]
    assert all("\u2581" not in line for line in out)


def test_over_long_lines_are_split_with_a_warning(translator: Translator, capsys: pytest.CaptureFixture[str]) -> None:
    limited = Translator(translator.model, translator.tokenizer, {**translator.config, "training": {"max_length": 8}})
    long_line = " ".join(["seven hundred"] * 12)
    out = limited.translate([long_line, "seven"], beam=2)
    assert out[0] and out[1] == translator.translate(["seven"], beam=2)[0]
    assert "translated in" in capsys.readouterr().err


def test_n_best_is_ordered_and_distinct(translator: Translator) -> None:
    (best,) = translator.translate_n_best(["four hundred twelve"], n_best=3, beam=4)
    scores = [score for _, score in best]
    assert scores == sorted(scores, reverse=True) and len({text for text, _ in best}) == 3
    assert best[0][0] == translator.translate(["four hundred twelve"], beam=4)[0]


def test_batches_respect_the_token_budget_and_cover_everything() -> None:
    lengths = [3, 40, 7, 7, 12, 1, 90]
    batches = length_sorted_batches(lengths, max_tokens=400, beam=2)
    assert sorted(i for b in batches for i in b) == list(range(7))
    for b in batches:
        assert len(b) == 1 or len(b) * 2 * (max(lengths[i] for i in b) + 50) <= 400


def test_attention_maps_have_token_shapes_and_are_distributions(translator: Translator) -> None:
    result = translator.attention("twenty-one thousand")
    n_src, n_tgt = len(result.source_tokens), len(result.target_tokens)
    assert result.source_tokens[-1] == "</s>" and result.target_tokens[-1] == "</s>"
    assert len(result.cross) == translator.model.config.n_decoder_layers
    assert result.cross[-1].shape == (translator.model.config.n_heads, n_tgt, n_src)
    assert result.encoder[0].shape[1:] == (n_src, n_src) and result.decoder_self[0].shape[1:] == (n_tgt, n_tgt)
    assert result.cross[0].sum(-1).sub(1).abs().max() < 1e-5
    forced = translator.attention("twenty-one thousand", tgt="einundzwanzigtausend")
    assert forced.translation == "einundzwanzigtausend"


def test_cli_translate_reads_stdin_line_for_line(trained_run: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO("twenty-one\n\nseven\n".encode())))
    assert main(["translate", "--checkpoint", str(trained_run), "--beam", "2"]) == 0
    captured = capsys.readouterr()
    lines = captured.out.split("\n")
    assert len(lines) == 4 and lines[1] == "" and lines[3] == ""
    assert "using checkpoint" in captured.err


def test_cli_translate_rejects_invalid_utf8_naming_the_line(trained_run: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "in.txt").write_bytes(b"seven\n\xff\xfe\n")
    assert main(["translate", "--checkpoint", str(trained_run), "--input", str(tmp_path / "in.txt")]) == 2
    assert "in.txt, line 2: not valid UTF-8" in capsys.readouterr().err


def test_cli_evaluate_prints_signatures_and_labels_tokenised_bleu(trained_run: Path, number_corpus, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    hyp = tmp_path / "hyp.de"
    assert main(["evaluate", "--checkpoint", str(trained_run), "--src", str(number_corpus["valid_en"]),
                 "--ref", str(number_corpus["valid_de"]), "--hyp", str(hyp), "--beam", "1"]) == 0
    out = capsys.readouterr().out
    assert "nrefs:1|case:mixed|eff:no|tok:13a" in out and "chrF2" in out
    assert "Moses-tokenised, lowercased" in out and "not comparable with sacreBLEU" in out
    assert len(hyp.read_text(encoding="utf-8").splitlines()) == 50


def test_cli_evaluate_chooses_alpha_among_those_given(trained_run: Path, number_corpus, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    args = ["evaluate", "--checkpoint", str(trained_run), "--src", str(number_corpus["valid_en"]),
            "--ref", str(number_corpus["valid_de"]), "--beam", "3"]
    assert main([*args, "--alphas", "0", "2.5", "0"]) == 0
    out = capsys.readouterr().out
    scores = {float(a): float(b) for a, b in re.findall(r"^alpha (\S+) +BLEU = ([\d.]+)", out, re.M)}
    assert sorted(scores) == [0.0, 2.5]  # each once
    best = max(scores, key=scores.get)
    assert f"best alpha on {number_corpus['valid_en']}: {best:g}" in out
    assert f"beam 3, alpha {best}" in out  # the evaluation that follows decodes with it


def test_cli_evaluate_chooses_alpha_under_a_brevity_penalty_floor(trained_run: Path, number_corpus,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    args = ["evaluate", "--checkpoint", str(trained_run), "--src", str(number_corpus["valid_en"]),
            "--ref", str(number_corpus["valid_de"]), "--beam", "3", "--alphas", "0", "1", "4"]
    assert main([*args, "--min-brevity-penalty", "0"]) == 0  # every alpha long enough: the highest BLEU
    out = capsys.readouterr().out
    scores = {float(a): float(b) for a, b in re.findall(r"^alpha (\S+) +BLEU = ([\d.]+)", out, re.M)}
    chosen = float(re.search(r"^best alpha on \S+: (\S+) \(the highest BLEU with brevity penalty >= 0\);", out, re.M)[1])
    assert scores[chosen] == max(scores.values())
    assert main([*args, "--min-brevity-penalty", "1"]) == 0
    out = capsys.readouterr().out
    bps = {float(a): float(bp) for a, bp in re.findall(r"^alpha (\S+) +BLEU = .*BP = ([\d.]+)", out, re.M)}
    chosen = float(re.search(r"^best alpha on \S+: (\S+) \(", out, re.M).group(1))
    if "no alpha reaches brevity penalty 1:" in out:
        assert bps[chosen] == max(bps.values())
    else:
        assert "(the highest BLEU with brevity penalty >= 1)" in out and bps[chosen] == 1.0
    assert f"beam 3, alpha {chosen}" in out


def test_cli_attention_writes_a_png(trained_run: Path, tmp_path: Path) -> None:
    for extra in ([], ["--all-heads", "--kind", "encoder"]):
        out = tmp_path / f"att{len(extra)}.png"
        assert main(["attention", "--checkpoint", str(trained_run), "--src", "twenty-one", "--out", str(out), *extra]) == 0
        assert out.read_bytes()[:4] == b"\x89PNG"
