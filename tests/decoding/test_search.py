"""Greedy, sampling and beam search: cache changes nothing, batches change nothing, §6.1's rules."""
from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from aiayn.data.batching import pad
from aiayn.data.tokenizer import EOS_ID
from aiayn.decoding.search import Sampling, beam_search, greedy_search, length_penalty
from aiayn.decoding.translator import Translator
from aiayn.model import DecoderCache, ModelConfig


@pytest.fixture(scope="module")
def translator(trained_run) -> Translator:
    return Translator.from_checkpoint(trained_run)


@pytest.fixture(scope="module")
def sources(translator: Translator) -> list[list[int]]:
    from aiayn.data.numbers import english, number_pairs

    texts = [english(n) for n, _, _ in number_pairs(64, seed=11)] + ["seven", "one hundred"]
    return translator.tokenizer.encode(texts)


def batch(ids: list[list[int]]) -> torch.Tensor:
    return pad([s + [EOS_ID] for s in ids])


def test_the_trained_fixture_has_learned_something(translator: Translator) -> None:
    outputs = translator.translate(["twenty-one", "three hundred five"], beam=4)
    assert all(outputs) and len(set(outputs)) == 2


def test_cached_and_uncached_decoding_give_identical_tokens(translator: Translator, sources) -> None:
    src = batch(sources[:24])
    model = translator.model
    assert greedy_search(model, src) == greedy_search(model, src, use_cache=False)
    cached = beam_search(model, src, beam_size=4, n_best=2)
    uncached = beam_search(model, src, beam_size=4, n_best=2, use_cache=False)
    assert [[h.tokens for h in hs] for hs in cached] == [[h.tokens for h in hs] for hs in uncached]
    for a, b in zip(cached, uncached):
        assert [h.score for h in a] == pytest.approx([h.score for h in b], abs=1e-4)


def test_beam_of_one_is_greedy(translator: Translator, sources) -> None:
    src = batch(sources)
    greedy = greedy_search(translator.model, src)
    beam_one = [hs[0].tokens for hs in beam_search(translator.model, src, beam_size=1)]
    assert beam_one == greedy


@pytest.mark.parametrize("beam", [1, 4])
def test_output_does_not_depend_on_the_batch(translator: Translator, sources, beam: int) -> None:
    together = translator.translate_ids(sources, beam=beam, batch_tokens=10**7)  # one batch of 66
    for index in (0, 5, 64, 65):
        alone = translator.translate_ids([sources[index]], beam=beam)
        assert alone[0][0].tokens == together[index][0].tokens
    in_pairs = [translator.translate_ids(sources[i:i + 2], beam=beam)[k][0].tokens for i in range(0, 8, 2) for k in (0, 1)]
    assert in_pairs == [h[0].tokens for h in together[:8]]


def test_greedy_and_beam_stop_at_the_length_cap(translator: Translator) -> None:
    src = batch([[5, 6, 7]])
    for tokens in (greedy_search(translator.model, src, extra_length=2)[0],
                   beam_search(translator.model, src, extra_length=2)[0][0].tokens):
        assert len(tokens) <= 4 + 2


def test_sampling_is_seeded_and_top_k_one_is_greedy(translator: Translator, sources) -> None:
    src = batch(sources[:10])
    model = translator.model
    assert greedy_search(model, src, sampling=Sampling(top_k=1, seed=0)) == greedy_search(model, src)
    hot = Sampling(temperature=5.0, seed=7)
    assert greedy_search(model, src, sampling=hot) == greedy_search(model, src, sampling=Sampling(temperature=5.0, seed=7))
    assert greedy_search(model, src, sampling=Sampling(temperature=5.0, top_p=0.9, seed=8)) != greedy_search(model, src)
    with pytest.raises(ValueError):
        Sampling(temperature=0)


# ----------------------------------------------------------------------------- exact checks on a known model

class MarkovModel(nn.Module):
    """A stand-in for the Transformer whose next-token log-probabilities depend only on the last
    token, so the best hypothesis can be found by brute force. Tokens: pad 0, bos 1, eos 2, a 3, b 4."""

    def __init__(self, table: list[list[float]]):
        super().__init__()
        self.config = ModelConfig(vocab_size=5, d_model=2, n_heads=1)
        self.position_limit = None
        self.table = torch.tensor(table, dtype=torch.float).log_softmax(dim=-1)
        self.steps = 0

    def encode(self, src: torch.Tensor) -> torch.Tensor:
        return src.float()[..., None]

    def new_cache(self, memory: torch.Tensor, src_mask: torch.Tensor, beams: int = 1) -> DecoderCache:
        return DecoderCache(cross=[], memory_mask=src_mask, beams=beams, dtype=memory.dtype)

    def decode(self, tgt_in, memory=None, src_mask=None, cache=None):
        self.steps += 1
        if cache is not None:
            cache.advance(tgt_in.size(1))
        return self.table[tgt_in[:, -1]][:, None, :].expand(-1, tgt_in.size(1), -1)


def brute_force_best(model: MarkovModel, limit: int, alpha: float) -> tuple[list[int], float]:
    best: tuple[list[int], float] = ([], -math.inf)
    for length in range(1, limit + 1):
        for body in itertools.product([3, 4], repeat=length - 1):
            for ending in ([2], [3], [4]) if length == limit else ([2],):
                tokens = list(body) + ending
                log_prob = sum(model.table[prev, tok].item() for prev, tok in zip([1] + tokens, tokens))
                score = log_prob / length_penalty(len(tokens), alpha)
                if score > best[1]:
                    best = ([t for t in tokens if t != 2], score)
    return best


def test_length_penalty_is_gnmts_not_a_plain_power() -> None:
    assert length_penalty(1, 0.6) == pytest.approx(1.0)
    assert length_penalty(7, 0.6) == pytest.approx(2.0 ** 0.6)
    assert length_penalty(10, 0.0) == 1.0
    assert length_penalty(10, 0.6) != pytest.approx(10 ** 0.6)


@pytest.mark.parametrize("alpha", [0.0, 0.6, 1.5])
def test_a_wide_beam_finds_the_best_normalised_hypothesis(alpha: float) -> None:
    # From <sos> "a" is likely, after "a" <eos> is likely, "b" leads to long low-probability chains.
    model = MarkovModel([[0, 0, 1, 1, 1], [0, 0, 0.5, 3, 1], [0, 0, 1, 1, 1], [0, 0, 2.5, 0.5, 1.5], [0, 0, 0.2, 1, 2]])
    src = torch.tensor([[3, 2]])  # limit = 2 + extra
    found = beam_search(model, src, beam_size=8, alpha=alpha, n_best=3, extra_length=3)[0]
    tokens, score = brute_force_best(model, 5, alpha)
    assert found[0].tokens == tokens and found[0].score == pytest.approx(score, abs=1e-5)
    assert [h.score for h in found] == sorted((h.score for h in found), reverse=True)  # n-best ordering
    assert len({tuple(h.tokens) for h in found}) == 3
    for h in found:
        assert h.score == pytest.approx(h.log_prob / length_penalty(len(h.tokens) + h.finished, alpha))


def test_search_stops_when_no_live_hypothesis_can_win() -> None:
    # <eos> is overwhelmingly likely at once, every other token leads to near-certain failure: the
    # first finished hypothesis cannot be beaten, so the search stops after one step, not at the cap.
    model = MarkovModel([[0, 0, 0, 0, 0], [0, 0, 9, -9, -9], [0, 0, 0, 0, 0], [0, 0, -9, 0, 0], [0, 0, -9, 0, 0]])
    found = beam_search(model, torch.tensor([[3, 3, 3, 2]]), beam_size=4, alpha=0.6, extra_length=50)
    assert found[0][0].tokens == [] and found[0][0].finished
    assert model.steps == 1
    # With the GNMT rule alone (k finished), a beam of 4 would have needed more steps.
    patient = MarkovModel(model.table.exp().tolist())
    beam_search(patient, torch.tensor([[3, 3, 3, 2]]), beam_size=4, alpha=0.6, n_best=4, extra_length=50)
    assert patient.steps > 1


def test_no_repeat_ngram_blocks_repeats() -> None:
    # "a" -> "a" is the most likely transition: without the ban, the output is "a a a a ...".
    model = MarkovModel([[0, 0, 0, 0, 0], [0, 0, -5, 3, 0], [0, 0, 0, 0, 0], [0, 0, -5, 3, 0], [0, 0, -1, 1, 0]])
    src = torch.tensor([[3, 3, 3, 2]])
    plain = greedy_search(model, src, extra_length=4)[0]
    assert plain[:3] == [3, 3, 3]
    for tokens in (greedy_search(model, src, extra_length=4, no_repeat_ngram_size=2)[0],
                   beam_search(model, src, extra_length=4, no_repeat_ngram_size=2)[0][0].tokens):
        bigrams = list(zip(tokens, tokens[1:]))
        assert len(bigrams) == len(set(bigrams))
