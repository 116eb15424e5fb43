"""What one request can do to the server: fail alone, within bounds, and change nothing for others."""
from __future__ import annotations

import asyncio
import json
import threading
from collections import Counter
from pathlib import Path

import httpx
import pytest

from aiayn.decoding.search import DecodingTimeout
from aiayn.decoding.translator import Translator
from aiayn.serving.batcher import DynamicBatcher

# Scripts the tokenizer never saw: each character becomes 3-4 byte-fallback tokens.
NON_LATIN = "나는 학생입니다 我是学生 Я студент أنا طالب 🙂👩‍🎓 "


def at_limit(text: str, characters: int = 2000) -> str:
    return (text * (characters // len(text) + 1))[:characters]


def post(url: str, path: str, body, **kwargs) -> httpx.Response:
    return httpx.post(url + path, content=json.dumps(body), headers={"Content-Type": "application/json"},
                      timeout=120, **kwargs)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


# ----------------------------------------------------------------------------- the batcher, in-process

class RecordingTranslator(Translator):
    """The real translator, recording each decoding call; sentences holding POISON fail, and the
    first call can be held until released (so later requests queue up behind it)."""

    POISON = 999_999

    def __init__(self, base: Translator):
        super().__init__(base.model, base.tokenizer, base.config)
        self.calls: list[tuple[int, list[list[int]]]] = []
        self.release = threading.Event()

    def translate_ids(self, sources, beam=4, alpha=0.6, *args, **kwargs):
        if not self.calls:
            self.release.wait(timeout=30)
        self.calls.append((beam, sources))
        if any(self.POISON in s for s in sources):
            raise ValueError("a sentence the model cannot take")
        return super().translate_ids(sources, beam, alpha, *args, **kwargs)


@pytest.fixture(scope="module")
def recording(trained_run: Path) -> RecordingTranslator:
    return RecordingTranslator(Translator.from_checkpoint(trained_run))


async def _submit(batcher: DynamicBatcher, jobs: list[tuple[str, int]]) -> list:
    """Send the first job, hold the model on it, queue the others in order, then release."""
    batcher.start()
    first = asyncio.ensure_future(batcher.translate([jobs[0][0]], jobs[0][1], 0.6))
    await asyncio.sleep(0.05)  # the model thread is now held on the first job
    rest = []
    for text, beam in jobs[1:]:
        rest.append(asyncio.ensure_future(batcher.translate([text], beam, 0.6)))
        await asyncio.sleep(0)
    batcher.translator.release.set()
    results = await asyncio.gather(first, *rest, return_exceptions=True)
    await batcher.stop()
    return results


def test_batches_keep_arrival_order(recording: RecordingTranslator) -> None:
    recording.calls.clear()
    recording.release.clear()
    tokens = len(recording.tokenizer.encode(["seven"])[0]) + 1
    # Room for two one-sentence requests per batch: the third beam-2 request must wait, and the
    # beam-3 one, older than it, must go first (it once went to the back of the queue).
    batcher = DynamicBatcher(recording, max_wait_ms=50, max_batch_tokens=2 * tokens)
    jobs = [("seven", 1), ("seven", 2), ("seven", 3), ("seven", 2), ("seven", 2), ("seven", 2)]
    results = asyncio.run(_submit(batcher, jobs))
    assert all(isinstance(r, list) for r in results)
    assert [(beam, len(sources)) for beam, sources in recording.calls] == [(1, 1), (2, 2), (3, 1), (2, 2)]


def test_a_failing_request_does_not_affect_others(recording: RecordingTranslator) -> None:
    recording.calls.clear()
    recording.release.clear()
    poison = recording.tokenizer.encode(["seven"])[0] + [RecordingTranslator.POISON]
    batcher = DynamicBatcher(recording, max_wait_ms=50, max_batch_tokens=10_000)
    original_encode = recording.tokenizer.encode
    recording.tokenizer.encode = lambda texts: [poison if t == "POISON" else ids
                                                for t, ids in zip(texts, original_encode(texts))]
    try:
        jobs = [("seven", 1), ("twenty-one", 4), ("POISON", 4), ("eight", 4), ("nine", 4)]
        results = asyncio.run(_submit(batcher, jobs))
    finally:
        del recording.tokenizer.encode
    assert [len(sources) for _, sources in recording.calls[:2]] == [1, 4]  # the four were one batch
    assert isinstance(results[2], ValueError)
    expected = Translator(recording.model, recording.tokenizer).translate(["twenty-one", "eight", "nine"])
    assert [r[0] for r in (results[1], results[3], results[4])] == expected


def test_a_slow_batch_is_cut_off_by_its_deadline(recording: RecordingTranslator) -> None:
    recording.release.set()
    results = asyncio.run(_submit(DynamicBatcher(recording, 0, 0, timeout_s=0.0), [("seven", 4)]))
    assert isinstance(results[0], DecodingTimeout)


# ----------------------------------------------------------------------------- bounds over HTTP

def test_bodies_over_the_limit_are_refused_before_parsing(server: str) -> None:
    big = b'{"text": ["' + b"x" * (3 * 1024 * 1024) + b'"]}'
    response = httpx.post(server + "/v1/translate", content=big, headers={"Content-Type": "application/json"})
    assert response.status_code == 413 and "--max-body-bytes" in response.json()["detail"]

    def chunks():  # no Content-Length: the bytes sent are counted
        yield b'{"text": ["'
        for _ in range(48):
            yield b"y" * 65536
        yield b'"]}'

    response = httpx.post(server + "/v1/attention", content=chunks(), headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert post(server, "/v1/translate", {"text": ["seven"]}).status_code == 200


def test_attention_is_bounded_in_work_and_size(server: str, trained_run: Path) -> None:
    translator = Translator.from_checkpoint(trained_run)
    long = at_limit(NON_LATIN)
    body = post(server, "/v1/attention", {"src": long, "tgt": long, "beam": 1}).json()
    assert len(body["source_tokens"]) == translator.max_source_tokens + 1
    assert len(body["target_tokens"]) == translator.max_target_tokens + 1
    assert set(body) == {"source_tokens", "target_tokens", "translation", "alignment"}
    too_many = post(server, "/v1/attention", {"src": long, "tgt": long, "maps": "all", "beam": 1})
    assert too_many.status_code == 413 and "maps=alignment" in too_many.json()["detail"]


def test_a_request_over_the_time_limit_fails_alone(bf16_server: tuple[str, int]) -> None:
    url, _ = bf16_server
    results: dict[str, httpx.Response] = {}

    def send(name: str, body) -> None:
        results[name] = post(url, "/v1/translate", body)

    heavy = {"text": [at_limit(NON_LATIN)] * 64, "beam": 16}  # minutes of work at the limits
    threads = [threading.Thread(target=send, args=("heavy", heavy))]
    threads += [threading.Thread(target=send, args=(f"light{i}", {"text": ["seven"], "beam": 4})) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results["heavy"].status_code == 503 and "--timeout" in results["heavy"].json()["detail"]
    assert all(results[f"light{i}"].status_code == 200 for i in range(6))


def test_a_bf16_server_survives_long_non_latin_input_on_every_endpoint(bf16_server: tuple[str, int],
                                                                         trained_run: Path) -> None:
    url, pid = bf16_server
    sentences = ["seven", "twenty-one thousand", "nine hundred ninety-nine"]
    expected = Translator.from_checkpoint(trained_run, bf16=True).translate(sentences, beam=4)
    assert post(url, "/v1/translate", {"text": sentences}).json()["translations"] == expected
    long = at_limit(NON_LATIN)
    requests = [  # at the limits (the first is cut off by the time limit), and long ones that finish
        ("/v1/translate", {"text": [long] * 64, "beam": 16}),
        ("/v1/translate", {"text": [at_limit(NON_LATIN[i % 9:] + NON_LATIN, 60) for i in range(4)], "beam": 4}),
        ("/v1/attention", {"src": long, "tgt": long, "beam": 16}),
        ("/v1/attention", {"src": at_limit(NON_LATIN, 300), "maps": "cross", "beam": 2}),
        ("/v1/attention", {"src": long, "tgt": long, "maps": "all"}),
    ]
    codes, rss = [], [rss_mb(pid)]
    for i in range(100):
        path, body = requests[0] if i % 20 == 0 else requests[1 + i % 4]
        response = post(url, path, body)
        codes.append(response.status_code)
        assert response.status_code in (200, 413, 503), response.text
        rss.append(rss_mb(pid))
    for path in ("/v1/model", "/healthz", "/"):
        assert httpx.get(url + path).status_code == 200
    print(f"\n--bf16 server RSS: {rss[0]:.0f} MB before, {rss[50]:.0f} MB after 50 and {rss[100]:.0f} MB after 100 "
          f"long non-Latin requests (+{rss[100] - rss[0]:.0f} MB); statuses {dict(Counter(codes))}")
    assert codes.count(200) >= 60 and codes.count(503) >= 5
    assert rss[100] - rss[0] < 200
    assert rss[100] - rss[50] < 30  # no growth once every kind of request has been seen
    assert post(url, "/v1/translate", {"text": sentences}).json()["translations"] == expected
