"""§5.1 batching by token count: budget respected, each pair once, order fixed by the seed."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from aiayn.data.batching import DEFAULT_WIDTHS, MIN_ROWS, TokenBatches, assign_widths, choose_widths, collate, pad
from aiayn.data.tokenizer import BOS_ID, EOS_ID, PAD_ID


@pytest.fixture()
def lengths() -> tuple[np.ndarray, np.ndarray]:
    # Like real parallel text: a target about as long as its source.
    rng = np.random.default_rng(0)
    src = rng.integers(2, 41, 3000)
    return src.astype(np.uint16), np.maximum(2, src + rng.integers(-4, 5, 3000)).astype(np.uint16)


def padded_size(batch: np.ndarray, src: np.ndarray, tgt: np.ndarray) -> int:
    return len(batch) * (int(src[batch].max()) + int(tgt[batch].max()))


def test_every_pair_once_per_epoch_in_few_shapes_within_the_token_budget(lengths) -> None:
    src, tgt = lengths
    batches = TokenBatches(src, tgt, max_tokens=1000, seed=1)
    plan = batches.epoch(0)
    assert len(plan) == len(batches)
    pairs = [plan[k] for k in range(len(plan))]
    assert sorted(np.concatenate(pairs).tolist()) == list(range(len(src)))
    shapes = set()
    for k, batch in enumerate(pairs):
        width_src, width_tgt = plan.width(k)
        assert src[batch].max() <= width_src and tgt[batch].max() <= width_tgt  # every pair fits its width
        rows = 1000 // (width_src + width_tgt)
        assert len(batch) <= rows  # within the budget, padding included
        shapes.add((max(len(batch), MIN_ROWS), width_src, width_tgt))  # as collated for training
    assert shapes == batches.shapes() and len(shapes) <= 2 * DEFAULT_WIDTHS
    # Every width has at most one batch short of its rows: the last of its pairs.
    widths = [plan.width(k) for k in range(len(plan))]
    for width in set(widths):
        sizes = sorted((len(b) for b, w in zip(pairs, widths) if w == width), reverse=True)
        assert all(size == 1000 // sum(width) for size in sizes[:-1])
    # The widths keep padding low: over 90% of the padded tokens are real.
    real = int(src.sum()) + int(tgt.sum())
    assert real / sum(len(b) * sum(w) for b, w in zip(pairs, widths)) > 0.9


def test_epochs_differ_in_order_but_not_in_shapes(lengths) -> None:
    src, tgt = lengths
    batches = TokenBatches(src, tgt, 1000, seed=1)

    def shapes(plan):
        return sorted((len(plan[k]), *plan.width(k)) for k in range(len(plan)))

    assert shapes(batches.epoch(0)) == shapes(batches.epoch(5))
    assert batches.epoch(0).order.tolist() != batches.epoch(5).order.tolist()


def test_widths_are_chosen_for_low_padding() -> None:
    # Two clusters of lengths: the widths fit each, not one width for all.
    src = np.array([5] * 100 + [40] * 100)
    tgt = np.array([6] * 100 + [38] * 100)
    widths = choose_widths(src, tgt, most=4)
    assert sorted(map(tuple, widths.tolist())) == [(5, 6), (40, 38)]
    assert assign_widths(src, tgt, widths).tolist() == [widths.tolist().index([5, 6])] * 100 + \
        [widths.tolist().index([40, 38])] * 100
    # One width allowed: the widest, which holds every pair.
    assert choose_widths(src, tgt, most=1).tolist() == [[40, 38]]
    assert len(choose_widths(np.arange(1, 300), np.arange(1, 300)[::-1], most=7)) <= 7


def test_a_long_source_and_a_long_target_are_batched_apart() -> None:
    src, tgt = np.array([300, 10]), np.array([10, 300])
    plan = TokenBatches(src, tgt, max_tokens=500).epoch(0)
    assert sorted(plan.width(k) for k in range(len(plan))) == [(10, 300), (300, 10)]
    with pytest.raises(ValueError, match="do not fit together"):  # one width for both cannot hold them
        TokenBatches(src, tgt, max_tokens=500, widths=1)


def test_order_is_a_function_of_seed_and_epoch(lengths) -> None:
    src, tgt = lengths

    def as_lists(plan):
        return [plan[k].tolist() for k in range(len(plan))]

    a, b = TokenBatches(src, tgt, 1000, seed=1), TokenBatches(src, tgt, 1000, seed=1)
    assert as_lists(a.epoch(3)) == as_lists(b.epoch(3))
    assert as_lists(a.epoch(3)) != as_lists(a.epoch(4))
    assert as_lists(a.epoch(3)) != as_lists(TokenBatches(src, tgt, 1000, seed=2).epoch(3))


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
    assert len(plan) > 10_000 and len(plan[0]) * sum(plan.width(0)) <= 9000
    assert len(batches.shapes()) <= 2 * DEFAULT_WIDTHS


def test_collate_builds_teacher_forcing_inputs() -> None:
    batch = collate([[5, 6, 7], np.array([8])], [[9], [10, 11]])
    assert batch.src.tolist() == [[5, 6, 7, EOS_ID], [8, EOS_ID, PAD_ID, PAD_ID]]
    assert batch.tgt_in.tolist() == [[BOS_ID, 9, PAD_ID], [BOS_ID, 10, 11]]
    assert batch.tgt_out.tolist() == [[9, EOS_ID, PAD_ID], [10, 11, EOS_ID]]
    assert batch.n_target_tokens == 5
    assert batch.positions.tolist() == [0, 1, 3, 4, 5]  # flat indices of the real target tokens
    assert pad([[4], []]).tolist() == [[4], [PAD_ID]]
    wide = collate([[5, 6, 7]], [[9]], widths=(6, 4))
    assert wide.src.tolist() == [[5, 6, 7, EOS_ID, PAD_ID, PAD_ID]]
    assert wide.tgt_in.tolist() == [[BOS_ID, 9, PAD_ID, PAD_ID]] and wide.tgt_out.tolist() == [[9, EOS_ID, PAD_ID, PAD_ID]]
    lone = collate([[5]], [[9]], widths=(3, 3), min_rows=2)  # an empty row beside a lone pair
    assert lone.src.tolist() == [[5, EOS_ID, PAD_ID], [PAD_ID] * 3] and lone.tgt_out[1].tolist() == [PAD_ID] * 3
    assert lone.positions.tolist() == [0, 1]
    with pytest.raises(ValueError, match="wider"):
        collate([[5, 6, 7]], [[9]], widths=(3, 4))


def synthetic_corpus(folder: Path) -> tuple[Path, Path]:
    """bench/gpu.py's synthetic corpus (random sentences of 5-60 pseudo-words)."""
    spec = importlib.util.spec_from_file_location("gpu_bench", Path(__file__).resolve().parents[2] / "bench" / "gpu.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.synthetic_corpus(folder, 60_000)


@pytest.mark.parametrize("corpus", ["multi30k", "tatoeba", "synthetic"])
def test_real_corpora_batch_in_few_shapes_with_little_padding(corpus: str, shared_data: Path, tmp_path: Path) -> None:
    from aiayn.data.prepared import PreparedData, PrepareOptions, prepare

    vocabulary, batch_tokens = 8000, 9000
    if corpus == "multi30k":
        src, tgt = shared_data / "multi30k" / "train.en.gz", shared_data / "multi30k" / "train.de.gz"
    elif corpus == "tatoeba":
        src, tgt = shared_data / "tatoeba-de-en" / "train.de.gz", shared_data / "tatoeba-de-en" / "train.en.gz"
    else:
        (src, tgt), vocabulary, batch_tokens = synthetic_corpus(tmp_path / "text"), 32000, 25000
    prepare(tmp_path / "data", str(src), str(tgt), options=PrepareOptions(vocab_size=vocabulary), log=lambda m: None)
    lengths = PreparedData(tmp_path / "data").lengths()
    batches = TokenBatches(lengths[:, 0] + 1, lengths[:, 1] + 1, batch_tokens, seed=1)
    print(f"{corpus}: {len(batches)} batches of {batch_tokens} tokens in {len(batches.shapes())} shapes, "
          f"padding {batches.padding_share():.1%}")
    assert len(batches.shapes()) <= 2 * DEFAULT_WIDTHS and batches.padding_share() < 0.1
