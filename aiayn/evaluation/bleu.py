"""Scores on detokenised text, the way the field compares systems (sacreBLEU, chrF)."""
from __future__ import annotations

from dataclasses import dataclass

from sacrebleu.metrics import BLEU, CHRF


@dataclass
class Score:
    score: float
    signature: str
    text: str  # sacreBLEU's own one-line summary


def _check(hypotheses: list[str], references: list[str]) -> None:
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")


def bleu(hypotheses: list[str], references: list[str]) -> Score:
    """Corpus sacreBLEU (13a tokenisation, mixed case) of raw, detokenised text."""
    _check(hypotheses, references)
    metric = BLEU()
    result = metric.corpus_score(hypotheses, [references])
    return Score(result.score, str(metric.get_signature()), str(result))


def chrf(hypotheses: list[str], references: list[str]) -> Score:
    _check(hypotheses, references)
    metric = CHRF()
    result = metric.corpus_score(hypotheses, [references])
    return Score(result.score, str(metric.get_signature()), str(result))
