"""§5.1 batching by token count: budget respected, each pair once, order fixed by the seed."""
from __future__ import annotations

import random

import pytest

from aiayn.data.batching import TokenBatches, collate
from aiayn.data.tokenizer import BOS_ID, EOS_ID, PAD_ID


@pytest.fixture()
def lengths() -> list[tuple[int, int]]:
    # Like real parallel text: a target about as long as its source.
    rng = random.Random(0)
    pairs = []
    for _ in range(3000):
        s = rng.randint(2, 40)
        pairs.append((s, max(2, s + rng.randint(-4, 4))))
    return pairs


def test_every_pair_once_per_epoch_within_the_token_budget(lengths) -> None:
    batches = TokenBatches(lengths, max_tokens=1000, seed=1).epoch(0)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for batch in batches:
        padded = len(batch) * (max(lengths[i][0] for i in batch) + max(lengths[i][1] for i in batch))
        assert padded <= 1000
    # Bucketing by length keeps padding low.
    real = sum(s + t for s, t in lengths)
    padded = sum(len(b) * (max(lengths[i][0] for i in b) + max(lengths[i][1] for i in b)) for b in batches)
    assert real / padded > 0.85


def test_order_is_a_function_of_seed_and_epoch(lengths) -> None:
    a, b = TokenBatches(lengths, 1000, seed=1), TokenBatches(lengths, 1000, seed=1)
    assert a.epoch(3) == b.epoch(3)
    assert a.epoch(3) != a.epoch(4)
    assert a.epoch(3) != TokenBatches(lengths, 1000, seed=2).epoch(3)


def test_a_pair_larger_than_the_budget_is_refused_clearly() -> None:
    with pytest.raises(ValueError, match="does not fit"):
        TokenBatches([(300, 300)], max_tokens=500)


def test_collate_builds_teacher_forcing_inputs() -> None:
    batch = collate([[5, 6, 7], [8]], [[9], [10, 11]])
    assert batch.src.tolist() == [[5, 6, 7, EOS_ID], [8, EOS_ID, PAD_ID, PAD_ID]]
    assert batch.tgt_in.tolist() == [[BOS_ID, 9, PAD_ID], [BOS_ID, 10, 11]]
    assert batch.tgt_out.tolist() == [[9, EOS_ID, PAD_ID], [10, 11, EOS_ID]]
    assert batch.n_target_tokens == 5
