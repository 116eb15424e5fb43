"""aiayn.data.moses: the Multi30k papers' tokenised lowercased text, and translating raw text with a
model trained on it (`--moses-text`)."""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import pytest

from aiayn.cli import main
from aiayn.data.moses import MosesTextTokenizer, moses_detokenize, moses_text
from aiayn.data.tokenizer import Tokenizer
from aiayn.decoding.translator import Translator
from aiayn.errors import InputError


def test_moses_text_is_the_papers_text() -> None:
    # test_2016_flickr's first English and second German line, raw and as data/task1/tok has them.
    assert moses_text(["A man in an orange hat starring at something."], "en") == \
        ["a man in an orange hat starring at something ."]
    assert moses_text(["Ein Boston Terrier läuft über saftig-grünes Gras vor einem weißen Zaun."], "de") == \
        ["ein boston terrier läuft über saftig-grünes gras vor einem weißen zaun ."]
    # Quotes and apostrophes stay characters (no &quot; or &apos;); English splits "'s" off, and
    # normalize-punctuation moves a full stop inside the closing quote, as in the papers' files.
    assert moses_text(['The dog\'s toy is "red".'], "en") == ['the dog \'s toy is " red . "']


def test_detokenising_gives_the_lowercased_sentence_back() -> None:
    sentences = ["Two dogs, one brown, play in the snow.", 'A man says "hello" (loudly).']
    assert moses_detokenize(moses_text(sentences, "en"), "en") == [s.lower() for s in sentences]


def test_the_tokenizer_encodes_moses_text_and_decodes_plain_text() -> None:
    corpus = moses_text(["Two dogs, one brown, play in the snow.", "A man is eating an apple.",
                         "Zwei Hunde spielen im Schnee.", "Ein Mann isst einen Apfel."] * 50, "en")
    inner = Tokenizer.train(corpus, vocab_size=400)
    tokenizer = MosesTextTokenizer(inner, "en", "de")
    raw = ["Two Dogs, one brown."]
    assert tokenizer.encode(raw) == inner.encode(["two dogs , one brown ."])
    assert tokenizer.decode(tokenizer.encode(raw)) == ["two dogs, one brown."]
    ids = tokenizer.encode(raw)[0]
    assert tokenizer.pieces(ids) == inner.pieces(ids) and tokenizer.vocab_size == inner.vocab_size
    assert tokenizer.lowercases and not inner.lowercases  # scored case-insensitively against raw references


def test_each_side_is_tokenised_and_detokenised_in_its_own_language() -> None:
    corpus = moses_text(["It's a dog.", 'Er sagt "Hallo", z.B. heute.'] * 50, "en")
    inner = Tokenizer.train(corpus, vocab_size=300)
    english_to_german, german_to_english = MosesTextTokenizer(inner, "en", "de"), MosesTextTokenizer(inner, "de", "en")
    german = ['Er sagt "Hallo", z.B. heute.']  # the rules differ: ' " hallo , " ' in English, ' " hallo " , ' in German
    assert moses_text(german, "en") != moses_text(german, "de")
    assert german_to_english.encode(german) == inner.encode(moses_text(german, "de"))  # a German source
    assert english_to_german.encode_target(german) == inner.encode(moses_text(german, "de"))  # a German target
    ids = inner.encode(["it 's a dog ."])
    assert german_to_english.decode(ids) == ["it's a dog."] and english_to_german.decode(ids) == ["it 's a dog."]


def test_a_language_without_moses_rules_is_refused() -> None:
    inner = Tokenizer.train(["a b c d e"] * 20, vocab_size=270)
    with pytest.raises(InputError, match="no rules for language 'ko'"):
        MosesTextTokenizer(inner, "ko", "en")


def test_moses_text_is_refused_for_images_and_classifiers(tmp_path: Path) -> None:
    from aiayn.commands.decoding import image_attention
    from aiayn.serving.app import LIMITS, classifier_app

    with pytest.raises(InputError, match="--moses-text"):
        image_attention(argparse.Namespace(moses_text=True, checkpoint=str(tmp_path)), tmp_path / "a.png")
    with pytest.raises(InputError, match="--moses-text"):
        classifier_app(tmp_path, "run", "cpu", False, False, 5.0, 4000, LIMITS, moses_text=True)


def test_a_translator_with_moses_text_translates_raw_text(trained_run: Path) -> None:
    plain = Translator.from_checkpoint(trained_run)
    moses = Translator.from_checkpoint(trained_run, moses_text=True)
    raw = ["Twenty-One", "Nine Hundred Seven."]
    expected = moses_detokenize(plain.translate(moses_text(raw, "en"), beam=2), "de")
    assert moses.translate(raw, beam=2) == expected
    assert moses.translate(["Twenty-One"], beam=2) == plain.translate(["twenty-one"], beam=2)  # lowercased first


def test_moses_text_needs_the_checkpoints_languages(trained_run: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    for config_path in run.rglob("config.json"):
        config = json.loads(config_path.read_text())
        config.pop("languages", None)
        config_path.write_text(json.dumps(config))
    source = tmp_path / "in.txt"
    source.write_text("Seven.\n")
    assert main(["translate", "--checkpoint", str(run), "--input", str(source), "--moses-text"]) == 2
    err = capsys.readouterr().err
    assert "names no source and target language" in err and "Traceback" not in err
    assert main(["translate", "--checkpoint", str(run), "--input", str(source)]) == 0  # without it: as before


def test_the_server_with_moses_text_translates_raw_text(trained_run: Path, launch) -> None:
    import httpx

    process, url = launch(trained_run, "--moses-text")
    try:
        response = httpx.post(f"{url}/v1/translate", json={"text": ["Twenty-One", "Nine Hundred Seven."], "beam": 2},
                              timeout=60)
    finally:
        process.terminate()
        process.wait(timeout=90)
    assert response.status_code == 200
    plain = Translator.from_checkpoint(trained_run)
    expected = plain.translate(["twenty-one", "nine hundred seven ."], beam=2)  # lowercased, tokenised
    assert expected != plain.translate(["Twenty-One", "Nine Hundred Seven."], beam=2)  # so the test can tell
    assert response.json()["translations"] == expected  # (German number words: nothing to detokenise)
