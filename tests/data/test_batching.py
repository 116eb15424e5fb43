"""§5.1 batching by token count: budget respected, each pair once, order fixed by the seed."""
from __future__ import annotations

import numpy as np
import pytest

from aiayn.data.batching import TokenBatches, collate, pad
from aiayn.data.tokenizer import BOS_ID, EOS_ID, PAD_ID


@pytest.fixture()
def lengths() -> tuple[np.ndarray, np.ndarray]:
    # Like real parallel text: a target about as long as its source.
    rng = np.random.default_rng(0)
    src = rng.integers(2, 41, 3000)
    return src.astype(np.uint16), np.maximum(2, src + rng.integers(-4, 5, 3000)).astype(np.uint16)


def padded_size(batch: np.ndarray, src: np.ndarray, tgt: np.ndarray) -> int:
    return len(batch) * (int(src[batch].max()) + int(tgt[batch].max()))


def test_every_pair_once_per_epoch_within_the_token_budget(lengths) -> None:
    src, tgt = lengths
    plan = TokenBatches(src, tgt, max_tokens=1000, seed=1).epoch(0)
    batches = [plan[k] for k in range(len(plan))]
    assert sorted(np.concatenate(batches).tolist()) == list(range(len(src)))
    assert all(padded_size(b, src, tgt) <= 1000 for b in batches)
    # Greedy: no batch could have taken the next pair of its length run and still fit.
    order, starts = plan.order, plan.starts
    for b in range(len(starts) - 2):
        grown = order[starts[b]:starts[b + 1] + 1]
        assert padded_size(grown, src, tgt) > 1000
    # Bucketing by length keeps padding low.
    real = int(src.sum()) + int(tgt.sum())
    assert real / sum(padded_size(b, src, tgt) for b in batches) > 0.85


def test_order_is_a_function_of_seed_and_epoch(lengths) -> None:
    src, tgt = lengths

    def as_lists(plan):
        return [plan[k].tolist() for k in range(len(plan))]

    a, b = TokenBatches(src, tgt, 1000, seed=1), TokenBatches(src, tgt, 1000, seed=1)
    assert as_lists(a.epoch(3)) == as_lists(b.epoch(3))
    assert as_lists(a.epoch(3)) != as_lists(a.epoch(4))
    assert as_lists(a.epoch(3)) != as_lists(TokenBatches(src, tgt, 1000, seed=2).epoch(3))
    # Ties are broken afresh each epoch: the same lengths, other partners.
    assert a.epoch(3).order.tolist() != a.epoch(4).order.tolist()
    assert np.array_equal(src[a.epoch(3).order] + tgt[a.epoch(3).order], src[a.epoch(4).order] + tgt[a.epoch(4).order])


def test_a_pair_larger_than_the_budget_is_refused_clearly() -> None:
    with pytest.raises(ValueError, match="does not fit"):
        TokenBatches(np.array([300]), np.array([300]), max_tokens=500)


def test_a_million_pairs_are_batched_fast_in_flat_memory() -> None:
    rng = np.random.default_rng(1)
    src = rng.integers(2, 100, 1_000_000).astype(np.uint16)
    tgt = rng.integers(2, 100, 1_000_000).astype(np.uint16)
    batches = TokenBatches(src, tgt, 9000, seed=1)
    plan = batches.epoch(0)
    assert plan.order.dtype == np.int32 and plan.order.nbytes == 4_000_000
    assert len(plan) > 10_000 and padded_size(plan[0], src, tgt) <= 9000


def test_collate_builds_teacher_forcing_inputs() -> None:
    batch = collate([[5, 6, 7], np.array([8])], [[9], [10, 11]])
    assert batch.src.tolist() == [[5, 6, 7, EOS_ID], [8, EOS_ID, PAD_ID, PAD_ID]]
    assert batch.tgt_in.tolist() == [[BOS_ID, 9, PAD_ID], [BOS_ID, 10, 11]]
    assert batch.tgt_out.tolist() == [[9, EOS_ID, PAD_ID], [10, 11, EOS_ID]]
    assert batch.n_target_tokens == 5
    assert pad([[4], []]).tolist() == [[4], [PAD_ID]]
