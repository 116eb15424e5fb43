"""The decoding cache (beams share the encoder side; positions written in place) and the weight
types (float32, bfloat16, int8): cached = uncached, batch-invariant, int8 close to float32."""
from __future__ import annotations

import pytest
import torch

from aiayn.data.batching import pad
from aiayn.decoding.int8 import Int8Linear
from aiayn.decoding.search import beam_search, greedy_search
from aiayn.decoding.translator import Translator
from aiayn.model import ModelConfig, Transformer, padding_mask

PAD, EOS = 0, 2


@pytest.fixture(scope="module", params=["float32", "bf16", "int8"])
def translator(request: pytest.FixtureRequest, trained_run) -> Translator:
    return Translator.from_checkpoint(trained_run, bf16=request.param == "bf16", int8=request.param == "int8")


@pytest.fixture(scope="module")
def sources(translator: Translator, number_corpus) -> list[list[int]]:
    return translator.tokenizer.encode(number_corpus["valid_en"].read_text().splitlines())


def batch(ids: list[list[int]]) -> torch.Tensor:
    return pad([s + [EOS] for s in ids])


def test_beams_share_the_encoders_keys_and_values() -> None:
    torch.manual_seed(0)
    model = Transformer(ModelConfig.preset("tiny", vocab_size=40)).eval()
    src = torch.randint(3, 40, (2, 7))
    src[1, 5:] = PAD
    memory, mask = model.encode(src), padding_mask(src, PAD)
    shared = model.new_cache(memory, mask, beams=3)
    repeated = model.new_cache(memory.repeat_interleave(3, 0), mask.repeat_interleave(3, 0))
    assert shared.cross[0][0].shape[0] == 2 and repeated.cross[0][0].shape[0] == 6
    tokens = torch.randint(3, 40, (6, 4))
    for t in range(4):
        a = model.decode(tokens[:, t:t + 1], cache=shared)
        b = model.decode(tokens[:, t:t + 1], cache=repeated)
        assert torch.allclose(a, b, atol=1e-5)


def test_a_step_writes_into_the_cache_instead_of_copying_it() -> None:
    torch.manual_seed(0)
    model = Transformer(ModelConfig.preset("tiny", vocab_size=40)).eval()
    src = torch.randint(3, 40, (2, 5))
    cache = model.new_cache(model.encode(src), padding_mask(src, PAD))
    pointers = []
    for t in range(20):
        model.decode(torch.randint(3, 40, (2, 1)), cache=cache)
        pointers.append(cache.self_attention[0][0].data_ptr())
    assert cache.length == 20 and cache.self_attention[0][0].size(2) == 32  # grown in chunks of 16
    assert len(set(pointers[:16])) == 1 and len(set(pointers)) == 2


def test_cached_and_uncached_decoding_agree(translator: Translator, sources) -> None:
    src = batch(sources[:16])
    model = translator.model
    assert greedy_search(model, src) == greedy_search(model, src, use_cache=False)
    cached, uncached = beam_search(model, src, beam_size=4), beam_search(model, src, beam_size=4, use_cache=False)
    assert [h[0].tokens for h in cached] == [h[0].tokens for h in uncached]


def test_a_sentence_decodes_alike_alone_and_in_any_batch(translator: Translator, sources) -> None:
    together = translator.translate_ids(sources, beam=4)
    alone = [translator.translate_ids([s], beam=4)[0] for s in sources[:12]]
    assert [h[0].tokens for h in together[:12]] == [h[0].tokens for h in alone]
    greedy = translator.translate_ids(sources[:12], beam=1)
    assert [h[0].tokens for h in greedy] == [translator.translate_ids([s], beam=1)[0][0].tokens for s in sources[:12]]


def test_int8_translates_like_float32(trained_run, number_corpus) -> None:
    texts = number_corpus["valid_en"].read_text().splitlines()
    full, int8 = Translator.from_checkpoint(trained_run), Translator.from_checkpoint(trained_run, int8=True)
    assert any(isinstance(m, Int8Linear) for m in int8.model.modules())
    same = sum(a == b for a, b in zip(full.translate(texts, beam=4), int8.translate(texts, beam=4)))
    assert same >= 0.9 * len(texts)
    src = batch(full.tokenizer.encode(texts[:8]))
    tgt = torch.full((8, 1), full.model.config.bos_id)
    logits, logits8 = full.model(src, tgt), int8.model(src, tgt)
    assert (logits8 - logits).abs().max() < 0.05 * logits.abs().max()


# ----------------------------------------------------------------------------- read-backs from the device

class HostReads:
    """Counts the decoding loop's looks at the device's values: calls of search.read_back, and
    any other way a tensor's values reach the host (item, tolist, bool, nonzero, numpy, cpu),
    which on a GPU would each wait for it. Also counts decoder steps."""

    READS = ("tolist", "item", "__bool__", "__int__", "__float__", "__index__", "nonzero", "numpy", "cpu")

    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        from aiayn.decoding import search

        self.read_backs = self.other_reads = self.steps = 0
        self.inside = False
        read_back, step = search.read_back, search._Decoder.step

        def counted_read_back(tensor):
            self.read_backs += 1
            self.inside = True
            try:
                return read_back(tensor)
            finally:
                self.inside = False

        def counted_step(decoder, tokens):
            self.steps += 1
            return step(decoder, tokens)

        monkeypatch.setattr(search, "read_back", counted_read_back)
        monkeypatch.setattr(search._Decoder, "step", counted_step)
        for name in self.READS:
            monkeypatch.setattr(torch.Tensor, name, self._counting(getattr(torch.Tensor, name)))

    def _counting(self, method):
        def wrapper(tensor, *args, **kwargs):
            if not self.inside:
                self.other_reads += 1
            return method(tensor, *args, **kwargs)
        return wrapper


@pytest.mark.parametrize("beam", [1, 4])
def test_decoding_reads_the_device_once_every_few_steps(translator: Translator, sources, beam: int,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    src = batch(sources[:16])

    def decode(sync_every: int):
        if beam == 1:
            return greedy_search(translator.model, src, sync_every=sync_every)
        return [[h.tokens for h in hs] for hs in beam_search(translator.model, src, beam_size=beam, sync_every=sync_every)]

    every_step = decode(1)  # the CPU's default: finished sentences leave at once
    reads = HostReads(monkeypatch)
    every_eighth = decode(8)  # a GPU's default
    assert every_eighth == every_step  # finished sentences waiting to leave change no output
    assert reads.other_reads == 0
    at_start_and_end = 1 + (1 if beam == 1 else 5)  # the length cap; the outputs
    assert reads.steps >= 8 and reads.read_backs <= -(-reads.steps // 8) + at_start_and_end
