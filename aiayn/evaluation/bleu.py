"""Scores on detokenised text, the way the field compares systems (sacreBLEU, chrF)."""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from sacrebleu.metrics import BLEU, CHRF


@dataclass
class Score:
    score: float
    signature: str
    text: str  # sacreBLEU's own one-line summary
    brevity_penalty: float | None = None  # BLEU's BP in (0, 1]; None for chrF


def _check(hypotheses: list[str], references: list[str]) -> None:
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")


def bleu(hypotheses: list[str], references: list[str], lowercase: bool = False) -> Score:
    """Corpus sacreBLEU (13a tokenisation, mixed case) of raw, detokenised text; `lowercase` (for
    a model that writes lowercase) scores case-insensitively, and the signature says case:lc."""
    _check(hypotheses, references)
    metric = BLEU(lowercase=lowercase)
    result = metric.corpus_score(hypotheses, [references])
    return Score(result.score, str(metric.get_signature()), str(result), result.bp)


def choose_alpha(scored: dict[float, Score], min_brevity_penalty: float | None = None) -> float:
    """The alpha whose translations score the highest BLEU, the first on a tie. With a floor, only
    alphas whose brevity penalty reaches it compete; when none does, the one with the highest
    brevity penalty (translations too short at every alpha: the least short)."""
    alphas = list(scored)
    if min_brevity_penalty is not None:
        long_enough = [a for a in alphas if scored[a].brevity_penalty >= min_brevity_penalty]
        if not long_enough:
            return max(alphas, key=lambda a: (scored[a].brevity_penalty, scored[a].score))
        alphas = long_enough
    return max(alphas, key=lambda a: scored[a].score)


def chrf(hypotheses: list[str], references: list[str], lowercase: bool = False) -> Score:
    _check(hypotheses, references)
    metric = CHRF(lowercase=lowercase)
    result = metric.corpus_score(hypotheses, [references])
    return Score(result.score, str(metric.get_signature()), str(result))


def tokenized_lowercased_bleu(hypotheses: list[str], references: list[str], lang: str) -> Score:
    """BLEU as Multi30k papers report it (fairseq / multi-bleu.perl): Moses-tokenised, lowercased.

    Runs higher than sacreBLEU on raw text and is NOT comparable with it; it exists so a result can
    be set beside published numbers such as Multi30k EN->DE 41.0 (Wu et al. 2021).
    """
    return _moses_bleu(hypotheses, references, lang, str.lower, f"moses-tokenized lowercased ({lang})")


_HYPHEN_INSIDE = re.compile(r"(\S)-(\S)")


def compound_split_bleu(hypotheses: list[str], references: list[str], lang: str = "de") -> Score:
    """The paper's WMT14 BLEU (tensor2tensor's get_ende_bleu.sh): Moses' replace-unicode-punctuation
    (full-width and curly marks to ASCII), Moses-tokenised, cased, every hyphen between two non-spaces
    split off as ##AT##-##AT## (so "Ost-West" is three tokens, as in the references the field scored
    against), scored like multi-bleu.perl. Not comparable with sacreBLEU. Both sides are normalised:
    the reference here is raw newstest2014, not the pre-tokenised copy the script read."""
    from sacremoses import MosesPunctNormalizer

    punctuation = MosesPunctNormalizer(lang=lang)

    def split(line: str) -> str:
        return _HYPHEN_INSIDE.sub(r"\1 ##AT##-##AT## \2", line)

    return _moses_bleu(hypotheses, references, lang, punctuation.replace_unicode_punct,
                       f"moses unicode-punct, tokenized, compound-split ({lang})", after=split)


def _moses_bleu(hypotheses: list[str], references: list[str], lang: str, before: Callable[[str], str], name: str,
                after: Callable[[str], str] = lambda line: line) -> Score:
    from sacremoses import MosesTokenizer

    _check(hypotheses, references)
    moses = MosesTokenizer(lang=lang)

    def tokenize(lines: list[str]) -> list[str]:
        return [after(moses.tokenize(before(line), return_str=True, escape=False)) for line in lines]

    metric = BLEU(tokenize="none", force=True)
    result = metric.corpus_score(tokenize(hypotheses), [tokenize(references)])
    return Score(result.score, f"{name} | {metric.get_signature()}", str(result))
