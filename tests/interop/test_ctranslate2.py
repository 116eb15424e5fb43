"""CTranslate2 export: the folder translates raw text with ctranslate2 and sentencepiece alone, with
aiayn's greedy outputs and logits (within 1e-4), for the paper's model and aiayn's variants."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from aiayn import ModelConfig, Transformer, Translator
from aiayn.cli import main
from aiayn.data.batching import pad
from aiayn.decoding.search import EXTRA_OUTPUT_LENGTH
from aiayn.interop import write_ctranslate2

TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def exported(trained_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("export") / "numbers-ct2"
    assert main(["export", "--checkpoint", str(trained_run), "--to", "ctranslate2", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def translator(trained_run: Path) -> Translator:
    return Translator.from_checkpoint(trained_run)


def ct2_translate(folder: Path, texts: list[str], suppress: list[list[str]] | None = None,
                  **options) -> tuple[list[str], list]:
    """Raw text -> raw text the way the README shows, with ctranslate2 and sentencepiece only;
    also the results (for their logits)."""
    import ctranslate2
    import sentencepiece as spm

    source = spm.SentencePieceProcessor(model_file=str(folder / "source.spm"))
    target = spm.SentencePieceProcessor(model_file=str(folder / "target.spm"))
    pieces = [source.encode(text, out_type=str) + ["</s>"] for text in texts]
    translator = ctranslate2.Translator(str(folder), device="cpu", intra_threads=2)
    # One sentence a call: CTranslate2's length cap is per batch, aiayn's per sentence (source + 50).
    results = [translator.translate_batch([p], beam_size=1, suppress_sequences=suppress or [["<pad>"], ["<s>"]],
                                          min_decoding_length=0, max_decoding_length=len(p) + EXTRA_OUTPUT_LENGTH,
                                          **options)[0] for p in pieces]
    return [target.decode(r.hypotheses[0]) for r in results], results


def ct2_max_logit_difference(translator: Translator, folder: Path, texts: list[str],
                             suppress: list[list[str]] | None = None) -> float:
    """CTranslate2's logits of every step of its greedy outputs against aiayn's, teacher-forced
    on the same outputs; the tokens CTranslate2 masks (-3.4e38: the suppressed ones) are left out."""
    _, results = ct2_translate(folder, texts, suppress, return_logits_vocab=True, return_end_token=True)
    vocab = {p: i for i, p in enumerate(translator.tokenizer.pieces(list(range(translator.tokenizer.vocab_size))))}
    c = translator.model.config
    sources = translator.tokenizer.encode(texts)
    worst = 0.0
    for source, result in zip(sources, results):
        output = [vocab[p] for p in result.hypotheses[0]]
        with torch.inference_mode():
            ours = translator.model(pad([source + [c.eos_id]], pad_id=c.pad_id), pad([[c.bos_id] + output[:-1]], pad_id=c.pad_id))[0]
        theirs = torch.from_numpy(np.stack([np.asarray(step) for step in result.logits[0]]))
        unmasked = theirs > -1e30
        worst = max(worst, (ours - theirs)[unmasked].abs().max().item())
    return worst


@pytest.mark.parametrize("sentences", ["number_sentences", "german_sentences"])
def test_export_translates_raw_text_as_aiayn_greedy(exported: Path, translator: Translator, sentences: str,
                                                    request: pytest.FixtureRequest) -> None:
    texts = request.getfixturevalue(sentences)
    assert ct2_translate(exported, texts)[0] == translator.translate(texts, beam=1)


@pytest.mark.parametrize("sentences", ["number_sentences", "german_sentences"])
def test_export_logits_match_within_1e_4(exported: Path, translator: Translator, sentences: str,
                                          request: pytest.FixtureRequest) -> None:
    assert ct2_max_logit_difference(translator, exported, request.getfixturevalue(sentences)) < TOLERANCE


def test_export_folder_is_self_contained(exported: Path) -> None:
    assert {p.name for p in exported.iterdir()} == {"model.bin", "config.json", "shared_vocabulary.json",
                                                     "source.spm", "target.spm"}


@pytest.mark.parametrize("quantization", ["int8", "bfloat16"])
def test_quantized_exports_translate_close_to_float32(trained_run: Path, translator: Translator, tmp_path: Path,
                                                      number_sentences: list[str], quantization: str) -> None:
    out = tmp_path / quantization
    assert main(["export", "--checkpoint", str(trained_run), "--to", "ctranslate2", str(out),
                 "--quantization", quantization]) == 0
    agree = np.mean([a == b for a, b in zip(ct2_translate(out, number_sentences)[0],
                                            translator.translate(number_sentences, beam=1))])
    assert agree >= 0.8, agree


@pytest.mark.parametrize("variant", [dict(norm_placement="pre"), dict(positional_encoding="learned"),
                                     dict(activation="swish", output_bias=True), dict(activation="gelu")])
def test_variants_export_with_the_same_logits(translator: Translator, tmp_path: Path, number_sentences: list[str],
                                              variant: dict) -> None:
    """Pre-norm, learned positions, the Marian activations and an output bias (random weights)."""
    torch.manual_seed(0)
    model = Transformer(ModelConfig.preset("tiny", vocab_size=translator.tokenizer.vocab_size, dropout=0.0,
                                           **variant)).eval()
    if model.config.output_bias:
        torch.nn.init.normal_(model.output_projection.bias)
    random = Translator(model, translator.tokenizer)
    out = write_ctranslate2(model, translator.tokenizer, tmp_path / "ct2")
    assert ct2_max_logit_difference(random, out, number_sentences[:10]) < TOLERANCE


def test_an_imported_marian_checkpoint_exports_with_its_own_vocabulary(imported: Path, tmp_path: Path,
                                                                       german_sentences: list[str]) -> None:
    """Marian's ids (</s> 0, decoder start <pad>) and its two SentencePiece models travel along."""
    import ctranslate2
    import sentencepiece as spm

    translator = Translator.from_checkpoint(imported)
    out = tmp_path / "ct2"
    assert main(["export", "--checkpoint", str(imported), "--to", "ctranslate2", str(out)]) == 0
    assert (out / "source.spm").read_bytes() == (imported / "source.spm").read_bytes()
    assert (out / "target.spm").read_bytes() == (imported / "target.spm").read_bytes()
    source = spm.SentencePieceProcessor(model_file=str(out / "source.spm"))
    pieces = [source.encode(text, out_type=str) + ["</s>"] for text in german_sentences]
    results = ctranslate2.Translator(str(out), device="cpu", intra_threads=2).translate_batch(
        pieces, beam_size=1, suppress_sequences=[["<pad>"]], min_decoding_length=0,
        max_decoding_length=max(map(len, pieces)) + EXTRA_OUTPUT_LENGTH)
    vocab = translator.tokenizer.vocab
    sources = translator.tokenizer.encode(german_sentences)
    ours = [h[0].tokens for h in translator.translate_ids(sources, beam=1)]
    # One length cap per batch in CTranslate2: cut each output at aiayn's cap (its source + </s> + 50).
    outputs = [r.hypotheses[0][: len(s) + 1 + EXTRA_OUTPUT_LENGTH] for r, s in zip(results, sources)]
    assert [[vocab[p] for p in output] for output in outputs] == ours
    # Raw text as MarianTokenizer decodes: a shared-vocabulary piece may be unknown to target.spm.
    target = spm.SentencePieceProcessor(model_file=str(out / "target.spm"))
    texts = [target.decode(output).replace("\u2581", " ").strip() for output in outputs]
    assert texts == translator.tokenizer.decode(ours)
    assert ct2_max_logit_difference(translator, out, german_sentences[:10], suppress=[["<pad>"]]) < TOLERANCE
