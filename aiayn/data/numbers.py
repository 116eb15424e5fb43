"""A translation task generated in code, for the demo: English number words to German ones.

"twenty-one" -> "einundzwanzig": German puts the ones before the tens and writes the whole number
as one word, so the model has to learn reordering and segmentation, not a word-for-word map.
"""
from __future__ import annotations

import random

EN_ONES = ["", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
           "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"]
EN_TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
DE_ONES = ["", "eins", "zwei", "drei", "vier", "fünf", "sechs", "sieben", "acht", "neun", "zehn", "elf",
           "zwölf", "dreizehn", "vierzehn", "fünfzehn", "sechzehn", "siebzehn", "achtzehn", "neunzehn"]
DE_TENS = ["", "", "zwanzig", "dreißig", "vierzig", "fünfzig", "sechzig", "siebzig", "achtzig", "neunzig"]


def english(n: int) -> str:
    """1 <= n < 1,000,000 in English words: 'four hundred twenty-one thousand six'."""
    if not 1 <= n < 1_000_000:
        raise ValueError(f"{n} is outside 1..999999")
    thousands, rest = divmod(n, 1000)
    words = [f"{_english_below_1000(thousands)} thousand"] if thousands else []
    if rest:
        words.append(_english_below_1000(rest))
    return " ".join(words)


def _english_below_1000(n: int) -> str:
    hundreds, rest = divmod(n, 100)
    words = [f"{EN_ONES[hundreds]} hundred"] if hundreds else []
    if rest >= 20:
        tens, ones = divmod(rest, 10)
        words.append(EN_TENS[tens] + (f"-{EN_ONES[ones]}" if ones else ""))
    elif rest:
        words.append(EN_ONES[rest])
    return " ".join(words)


def german(n: int) -> str:
    """1 <= n < 1,000,000 as one German word: 421006 -> 'vierhunderteinundzwanzigtausendsechs'."""
    if not 1 <= n < 1_000_000:
        raise ValueError(f"{n} is outside 1..999999")
    thousands, rest = divmod(n, 1000)
    word = _german_below_1000(thousands, final=False) + "tausend" if thousands else ""
    return word + (_german_below_1000(rest, final=True) if rest else "")


def _german_below_1000(n: int, final: bool) -> str:
    hundreds, rest = divmod(n, 100)
    word = ("ein" if hundreds == 1 else DE_ONES[hundreds]) + "hundert" if hundreds else ""
    if rest == 1:
        return word + ("eins" if final else "ein")  # "einhunderteins", but "eintausend"
    if rest >= 20:
        tens, ones = divmod(rest, 10)
        prefix = ("ein" if ones == 1 else DE_ONES[ones]) + "und" if ones else ""
        return word + prefix + DE_TENS[tens]
    return word + DE_ONES[rest]


def number_pairs(count: int, seed: int, exclude: set[int] = frozenset(), high: int = 999_999) -> list[tuple[int, str, str]]:
    """`count` distinct random numbers in 1..high (none from `exclude`) with their English and German words."""
    rng = random.Random(seed)
    chosen: set[int] = set()
    while len(chosen) < count:
        n = rng.randint(1, high)
        if n not in exclude:
            chosen.add(n)
    numbers = sorted(chosen)
    rng.shuffle(numbers)
    return [(n, english(n), german(n)) for n in numbers]
