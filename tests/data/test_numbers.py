"""The demo's generated task: English and German number words."""
from __future__ import annotations

import pytest

from aiayn.data.numbers import english, german, number_pairs


@pytest.mark.parametrize("n,en,de", [
    (1, "one", "eins"),
    (21, "twenty-one", "einundzwanzig"),
    (30, "thirty", "dreißig"),
    (101, "one hundred one", "einhunderteins"),
    (1000, "one thousand", "eintausend"),
    (17017, "seventeen thousand seventeen", "siebzehntausendsiebzehn"),
    (101001, "one hundred one thousand one", "einhunderteintausendeins"),
    (999999, "nine hundred ninety-nine thousand nine hundred ninety-nine",
     "neunhundertneunundneunzigtausendneunhundertneunundneunzig"),
])
def test_number_words(n: int, en: str, de: str) -> None:
    assert english(n) == en
    assert german(n) == de


def test_pairs_are_distinct_and_respect_exclusions() -> None:
    held_out = {n for n, _, _ in number_pairs(100, seed=1)}
    pairs = number_pairs(500, seed=2, exclude=held_out)
    numbers = [n for n, _, _ in pairs]
    assert len(set(numbers)) == 500 and not held_out & set(numbers)
    assert number_pairs(50, seed=3) == number_pairs(50, seed=3)
    with pytest.raises(ValueError):
        english(0)
