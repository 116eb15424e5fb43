"""Text as the Multi30k papers' models read and write it: lowercased, punctuation-normalised and
Moses-tokenised (multi30k/dataset's scripts/task1-tokenize.sh, with sacremoses), and a tokenizer
that lets such a model translate raw text.

A model trained on that text (`aiayn train --moses-text` makes it from the raw corpus, or
bench/multi30k_tok.py beforehand) reads and writes it; `MosesTextTokenizer` puts raw input into
that form before the subword vocabulary sees it and detokenises the output, so such a model takes
and gives plain sentences (by itself when its checkpoint says `moses_text`, else with `--moses-text`).
"""
from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Any

from aiayn.errors import InputError

if TYPE_CHECKING:
    from aiayn.data.marian_vocab import AnyTokenizer


@lru_cache(maxsize=8)
def _moses(lang: str) -> tuple[Any, Any, Any]:
    """sacremoses' punctuation normaliser, tokeniser and detokeniser for `lang` (built once each:
    loading a language's non-breaking prefixes takes a while)."""
    from sacremoses import MosesDetokenizer, MosesPunctNormalizer, MosesTokenizer

    return MosesPunctNormalizer(lang=lang), MosesTokenizer(lang=lang), MosesDetokenizer(lang=lang)


def check_language(lang: str, where: str = "--moses-text") -> None:
    """InputError unless sacremoses has `lang`'s rules (it would fall back on English's silently);
    `where` names what gave the language."""
    from sacremoses.corpus import NonbreakingPrefixes

    if lang not in NonbreakingPrefixes().available_langs:
        raise InputError(f"{where}: the Moses tokeniser has no rules for language {lang!r}")


def trained_on_moses_text(config: dict[str, Any]) -> bool:
    """Whether a checkpoint's config says its model was trained on text made Moses text (`aiayn train --moses-text`)."""
    training = config.get("training")
    return isinstance(training, dict) and training.get("moses_text") is True


def moses_languages(wanted: bool | None, source_lang: str | None, target_lang: str | None) -> tuple[str, str] | None:
    """The (source, target) languages a corpus is made Moses text in, when it is `wanted` (the rules
    are a language's), checked before anything is read or written."""
    if not wanted:
        return None
    if not (source_lang and target_lang):
        raise InputError("--moses-text: give --source-lang and --target-lang (the Moses rules are a language's)")
    check_language(source_lang)
    check_language(target_lang)
    return source_lang, target_lang


def moses_text(lines: list[str], lang: str) -> list[str]:
    """lowercase.perl | normalize-punctuation.perl -l LANG | tokenizer.perl -l LANG, with entities
    left unescaped (the Multi30k papers' data/task1/tok files)."""
    normalizer, tokenizer, _ = _moses(lang)
    return [tokenizer.tokenize(normalizer.normalize(line.lower()), return_str=True, escape=False) for line in lines]


def moses_detokenize(lines: list[str], lang: str) -> list[str]:
    """Moses-tokenised lines joined back into plain text (detokenizer.perl -l LANG)."""
    _, _, detokenizer = _moses(lang)
    return [detokenizer.detokenize(line.split()) for line in lines]


class MosesTextTokenizer:
    """A subword tokenizer of Moses-tokenised lowercased text, used on raw text: `encode` makes
    source sentences into that text first (in the source language), `encode_target` target
    sentences (in the target language), `decode` detokenises the output (in the target language),
    which stays lowercase. The rest is the wrapped tokenizer's."""

    def __init__(self, tokenizer: AnyTokenizer, source_lang: str, target_lang: str) -> None:
        check_language(source_lang)
        check_language(target_lang)
        self.tokenizer, self.source_lang, self.target_lang = tokenizer, source_lang, target_lang

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.vocab_size

    @property
    def lowercases(self) -> bool:
        """The output is lowercase: scores against raw references are case-insensitive."""
        return True

    def encode(self, texts: list[str]) -> list[list[int]]:
        return self.tokenizer.encode(moses_text(texts, self.source_lang))

    def encode_target(self, texts: list[str]) -> list[list[int]]:
        return self.tokenizer.encode_target(moses_text(texts, self.target_lang))

    def decode(self, ids: list[list[int]]) -> list[str]:
        return moses_detokenize(self.tokenizer.decode(ids), self.target_lang)

    def pieces(self, ids: list[int]) -> list[str]:
        return self.tokenizer.pieces(ids)
