"""aiayn.evaluation.bleu: the brevity penalty read back, and alpha chosen under a floor on it."""
from __future__ import annotations

import math

import pytest

from aiayn.evaluation.bleu import Score, bleu, choose_alpha

REFERENCES = ["a man rides a red bike down the street .", "two dogs play in the snow ."]


def test_bleu_reports_the_brevity_penalty_of_short_translations() -> None:
    assert bleu(REFERENCES, REFERENCES).brevity_penalty == pytest.approx(1.0)
    short = bleu(["a man rides a red bike .", "two dogs play ."], REFERENCES)
    # BP = exp(1 - r/c): 17 reference words (13a splits the full stops off) against 11
    assert short.brevity_penalty == pytest.approx(math.exp(1 - 17 / 11))
    assert f"BP = {short.brevity_penalty:.3f}" in short.text


def _scores(*rows: tuple[float, float, float]) -> dict[float, Score]:
    return {alpha: Score(bleu_score, "", "", bp) for alpha, bleu_score, bp in rows}


def test_choose_alpha_takes_the_highest_bleu_without_a_floor_the_first_on_a_tie() -> None:
    scored = _scores((0.6, 40.0, 0.97), (1.4, 40.5, 0.975), (2.2, 40.5, 0.99))
    assert choose_alpha(scored) == 1.4


def test_choose_alpha_takes_the_highest_bleu_among_the_long_enough() -> None:
    scored = _scores((0.6, 40.0, 0.96), (1.4, 40.5, 0.975), (1.8, 40.2, 0.98), (2.2, 40.3, 0.99), (3, 39.0, 1.0))
    assert choose_alpha(scored, 0.98) == 2.2
    assert choose_alpha(scored, 0.975) == 1.4  # the floor itself is long enough
    assert choose_alpha(scored, 0.0) == 1.4


def test_choose_alpha_takes_the_least_short_when_none_reaches_the_floor() -> None:
    scored = _scores((0.6, 40.0, 0.93), (1.4, 40.5, 0.95), (2.2, 39.0, 0.96), (3, 39.5, 0.96))
    assert choose_alpha(scored, 0.98) == 3  # the highest BP, then the higher BLEU
