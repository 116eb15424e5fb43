"""The HTTP service, over real HTTP on loopback: endpoints, limits, load, fuzzing, shutdown."""
from __future__ import annotations

import json
import signal
import threading

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aiayn.decoding.translator import Translator
from loadgen import run_load

SENTENCES = ["twenty-one", "four hundred twelve thousand three", "seven", "nine hundred ninety-nine", "sixty-six"]


def post(url: str, path: str, body, **kwargs) -> httpx.Response:
    content = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return httpx.post(url + path, content=content, headers={"Content-Type": "application/json"}, timeout=60, **kwargs)


def test_health_model_and_openapi(server: str) -> None:
    assert httpx.get(f"{server}/healthz").json()["status"] == "ok"
    info = httpx.get(f"{server}/v1/model").json()
    assert info["languages"] == {"source": "en", "target": "de"}
    assert info["vocab_size"] > 256 and info["parameters"]["total"] > 0 and info["config"]["d_model"] == 64
    schema = httpx.get(f"{server}/openapi.json").json()
    assert {"/v1/translate", "/v1/attention", "/v1/model", "/healthz"} <= set(schema["paths"])
    request = schema["components"]["schemas"]["TranslateRequest"]
    assert request["properties"]["beam"]["maximum"] == 16 and request["required"] == ["text"]


def test_translate_matches_the_translator_and_keeps_order(server: str, trained_run) -> None:
    response = post(server, "/v1/translate", {"text": SENTENCES + [""], "beam": 4})
    assert response.status_code == 200
    body = response.json()
    assert body["translations"] == Translator.from_checkpoint(trained_run).translate(SENTENCES + [""], beam=4)
    assert body["translations"][-1] == "" and body["model"] == "run"
    assert post(server, "/v1/translate", {"text": []}).json()["translations"] == []


@pytest.mark.parametrize("body,field", [
    ({"text": "not a list"}, "text"),
    ({"text": [1, 2]}, "text"),
    ({"texts": ["x"]}, "text"),
    ({"text": ["x"], "beam": 0}, "beam"),
    ({"text": ["x"], "beam": 17}, "beam"),
    ({"text": ["x"], "beam": "four"}, "beam"),
    ({"text": ["x"], "alpha": -1}, "alpha"),
])
def test_bad_requests_get_422_naming_the_field(server: str, body, field: str) -> None:
    response = post(server, "/v1/translate", body)
    assert response.status_code == 422
    assert any(field in map(str, error["loc"]) for error in response.json()["detail"])


def test_non_finite_numbers_get_422_not_500(server: str) -> None:
    for body in ('{"alpha": NaN}', '{"text": ["x"], "alpha": Infinity}', '{"text": ["x"], "beam": NaN}'):
        response = post(server, "/v1/translate", body)
        assert response.status_code == 422, response.text


def test_malformed_json_gets_422(server: str) -> None:
    assert post(server, "/v1/translate", b'{"text": ["x"').status_code == 422
    assert post(server, "/v1/attention", b"\xff\xfe").status_code == 422


def test_too_large_requests_get_413(server: str) -> None:
    too_many = post(server, "/v1/translate", {"text": ["seven"] * 65})
    assert too_many.status_code == 413 and "at most 64" in too_many.json()["detail"]
    too_long = post(server, "/v1/translate", {"text": ["ok", "x" * 2001]})
    assert too_long.status_code == 413 and "text[1]" in too_long.json()["detail"]


def test_attention_returns_tokens_and_distributions(server: str) -> None:
    body = post(server, "/v1/attention", {"src": "twenty-one thousand"}).json()
    rows, cols = len(body["target_tokens"]), len(body["source_tokens"])
    assert len(body["alignment"]) == rows and all(len(r) == cols for r in body["alignment"])
    assert all(abs(sum(r) - 1) < 1e-4 for r in body["alignment"])
    assert "cross" not in body and "encoder" not in body  # the page needs the alignment only
    detailed = post(server, "/v1/attention", {"src": "twenty-one thousand", "maps": "cross"}).json()
    assert len(detailed["cross"]) == 2 and len(detailed["cross"][0]) == 4  # layers, heads
    assert detailed["alignment"] == body["alignment"] and "encoder" not in detailed
    everything = post(server, "/v1/attention", {"src": "twenty-one thousand", "maps": "all"}).json()
    assert len(everything["encoder"][0][0]) == cols and len(everything["decoder_self"][0][0]) == rows
    forced = post(server, "/v1/attention", {"src": "seven", "tgt": "sieben"}).json()
    assert forced["translation"] == "sieben"


def test_load_of_500_requests_from_16_clients_all_succeed_and_are_batched(server: str) -> None:
    before = httpx.get(f"{server}/healthz").json()["batches"]
    result = run_load(server, SENTENCES, n_requests=500, clients=16, beam=4)
    print(f"\nload test (tiny model): {result}")
    assert result.failures == 0 and len(result.latencies_ms) == 500
    batches = httpx.get(f"{server}/healthz").json()["batches"] - before
    assert batches < 250  # requests were decoded together, about 16 to a batch


def test_invalid_requests_do_not_affect_valid_ones(server: str) -> None:
    results: dict[str, int] = {}

    def send(name: str, body) -> None:
        results[name] = post(server, "/v1/translate", body).status_code

    threads = [threading.Thread(target=send, args=(f"good{i}", {"text": ["seven"]})) for i in range(8)]
    threads += [threading.Thread(target=send, args=(f"bad{i}", {"text": ["x"], "beam": 99})) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(code == 200 for name, code in results.items() if name.startswith("good"))
    assert all(code == 422 for name, code in results.items() if name.startswith("bad"))


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=30),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                           max_leaves=12)
translate_bodies = st.fixed_dictionaries({}, optional={
    "text": st.lists(st.text(max_size=60), max_size=5) | json_values,
    "beam": st.integers(-3, 20) | json_values,
    "alpha": st.floats(allow_nan=True) | json_values,
}) | json_values


@pytest.fixture(params=["float32", "bf16"])
def any_server(request: pytest.FixtureRequest) -> str:
    return request.getfixturevalue("server") if request.param == "float32" else request.getfixturevalue("bf16_server")[0]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=translate_bodies, path=st.sampled_from(["/v1/translate", "/v1/attention"]))
def test_fuzzed_bodies_never_give_500(any_server: str, body, path: str) -> None:
    try:
        content = json.dumps(body, allow_nan=True)
    except (TypeError, ValueError):
        return
    response = post(any_server, path, content)
    # 503: the bf16 server's short time limit cut a long decoding off.
    assert response.status_code in (200, 413, 422, 503), (body, response.text)


def test_server_survives_the_fuzzing(any_server: str) -> None:
    assert post(any_server, "/v1/translate", {"text": ["seven"]}).status_code == 200


def test_graceful_shutdown_lets_in_flight_requests_finish(trained_run, launch) -> None:
    import time

    process, url = launch(trained_run)
    outcome: dict[str, int] = {}
    # Heavy enough to be in flight at the signal, light enough to end within uvicorn's 30 s grace on a busy machine:
    # time the request first and double it until it takes a second, then signal a third of the way through.
    heavy = {"text": [" ".join(["seven hundred"] * 100)] * 4, "beam": 16}
    while True:
        started = time.perf_counter()
        assert post(url, "/v1/translate", heavy).status_code == 200
        duration = time.perf_counter() - started
        if duration >= 1.0 or len(heavy["text"]) >= 64:
            break
        heavy["text"] = heavy["text"] * 2

    def slow_request() -> None:
        outcome["status"] = post(url, "/v1/translate", heavy).status_code

    thread = threading.Thread(target=slow_request)
    thread.start()
    time.sleep(duration / 3)  # the request is being decoded
    process.send_signal(signal.SIGTERM)
    time.sleep(min(0.2, duration / 6))
    assert "status" not in outcome, "the request finished before the signal: make it heavier"
    thread.join(timeout=300)
    assert outcome.get("status") == 200
    # uvicorn re-raises the signal once it has shut down gracefully, so the exit status is -SIGTERM.
    assert process.wait(timeout=60) in (0, -signal.SIGTERM)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/healthz", timeout=2)


def test_lone_surrogates_are_refused_not_crashed_on(server: str) -> None:
    response = post(server, "/v1/translate", '{"text": ["ok", "\\ud800"]}')
    assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["body", "text", "1"]
    assert post(server, "/v1/attention", '{"src": "\\udfff"}').status_code == 422
