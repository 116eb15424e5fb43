"""Fixtures for the interop tests: the number-word run exported to both formats, and a Marian model
folder built here as OPUS-MT ships one (random weights, separate source and target SentencePiece
models, one vocab.json), so nothing is downloaded."""
from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

pytest.importorskip("transformers", reason="the interop extra (pip install -e '.[interop]')")
pytest.importorskip("ctranslate2", reason="the interop extra (pip install -e '.[interop]')")

from aiayn.data.corpus import read_lines  # noqa: E402

N_SENTENCES = 50


@pytest.fixture(scope="session")
def german_sentences(multi30k_dir: Path) -> list[str]:
    """The first 50 Multi30k test sentences (German, with umlauts, capitals and punctuation)."""
    return read_lines(multi30k_dir / "test_2016_flickr.de.gz")[:N_SENTENCES]


@pytest.fixture(scope="session")
def number_sentences(number_corpus: dict[str, Path]) -> list[str]:
    """The 50 held-out English number sentences the number-word run never trained on."""
    return read_lines(number_corpus["valid_en"])


def _train_spm(lines: list[str], vocab_size: int) -> bytes:
    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_writer=model, model_type="unigram",
                                   vocab_size=vocab_size, character_coverage=1.0, num_threads=2, minloglevel=2)
    return model.getvalue()


def marian_vocab(source_proto: bytes, target_proto: bytes) -> dict[str, int]:
    """vocab.json as Marian ships it: </s> 0, <unk> 1, the pieces of both SentencePiece models, <pad> last."""
    import sentencepiece as spm

    pieces: dict[str, None] = {}
    for proto in (source_proto, target_proto):
        sp = spm.SentencePieceProcessor(model_proto=proto)
        pieces.update((sp.id_to_piece(i), None) for i in range(sp.get_piece_size())
                      if not (sp.is_control(i) or sp.is_unknown(i)))
    return {piece: i for i, piece in enumerate(["</s>", "<unk>", *pieces, "<pad>"])}


def build_marian_folder(directory: Path, multi30k_dir: Path) -> Path:
    """A small MarianMTModel (swish, 2+2 layers, d_model 32) with random weights and a random
    non-zero final_logits_bias, saved with save_pretrained beside source.spm (German),
    target.spm (English) and vocab.json, as MarianTokenizer.save_pretrained writes them."""
    import torch
    from transformers import MarianConfig, MarianMTModel, MarianTokenizer

    source_proto = _train_spm(read_lines(multi30k_dir / "train.de.gz")[:3000], 300)
    target_proto = _train_spm(read_lines(multi30k_dir / "train.en.gz")[:3000], 250)
    vocab = marian_vocab(source_proto, target_proto)
    directory.mkdir(parents=True)
    (directory / "source.spm").write_bytes(source_proto)
    (directory / "target.spm").write_bytes(target_proto)
    (directory / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    MarianTokenizer(str(directory / "source.spm"), str(directory / "target.spm"), str(directory / "vocab.json"),
                    source_lang="de", target_lang="en").save_pretrained(directory)

    pad = len(vocab) - 1
    # An OPUS-MT config.json's fields, at a small size.
    config = MarianConfig(
        vocab_size=len(vocab), decoder_vocab_size=len(vocab), d_model=32, encoder_layers=2, decoder_layers=2,
        encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64,
        activation_function="swish", scale_embedding=True, max_position_embeddings=512, pad_token_id=pad,
        decoder_start_token_id=pad, eos_token_id=0, forced_eos_token_id=0, share_encoder_decoder_embeddings=True,
        tie_word_embeddings=True, static_position_embeddings=True, normalize_before=False, normalize_embedding=False)
    generator = torch.Generator().manual_seed(0)
    model = MarianMTModel(config)
    with torch.no_grad():
        # Random weights far from HF's init_std 0.02 (near-uniform outputs): unit-variance
        # embeddings and value/output/feed-forward projections at twice Xavier's scale make the
        # outputs depend on the source; queries and keys keep Xavier's scale (larger ones make
        # attention so peaked that float32 rounding moves logits by 1e-2); a bias towards </s>
        # ends some outputs before the length cap. (Random tied embeddings favour repeating the
        # last token: most outputs are loops, of different words.)
        for name, parameter in model.named_parameters():
            if "embed_positions" in name:
                continue
            if name == "model.shared.weight":
                parameter.copy_(torch.randn(parameter.shape, generator=generator))
            elif name.endswith("weight") and parameter.dim() == 2:
                scale = 1.0 if name.endswith(("q_proj.weight", "k_proj.weight")) else 2.0
                parameter.copy_(scale * torch.randn(parameter.shape, generator=generator) / parameter.size(1) ** 0.5)
            elif "layer_norm" in name and name.endswith("weight"):
                parameter.copy_(1 + 0.1 * torch.randn(parameter.shape, generator=generator))
            else:
                parameter.copy_(0.1 * torch.randn(parameter.shape, generator=generator))
        model.model.shared.weight[pad] = 0  # as Marian's: <pad>, the decoder start, embeds to zero
        model.final_logits_bias.copy_(torch.randn(model.final_logits_bias.shape, generator=generator))
        model.final_logits_bias[0, 0] += 17.0
    model.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def marian_dir(multi30k_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_marian_folder(tmp_path_factory.mktemp("marian") / "opus-mt-de-en", multi30k_dir)


@pytest.fixture(scope="session")
def imported(marian_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`marian_dir` imported with the command line."""
    from aiayn.cli import main

    out = tmp_path_factory.mktemp("import") / "opus-mt-de-en"
    assert main(["import", "--from", "huggingface", str(marian_dir), "--out", str(out)]) == 0
    return out
