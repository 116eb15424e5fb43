"""The HTTP service: translate, attention, model facts, health, and a page that shows the attention.

    POST /v1/translate  {"text": ["...", ...], "beam": 4, "alpha": 0.6} -> {"translations": [...], "model": ...}
    POST /v1/attention  {"src": "...", "tgt": "..." (optional), "maps": "alignment"} -> tokens and weights
    GET  /v1/model, GET /healthz, GET / (the page)

Every request is bounded: its body's size (checked before parsing), its sentences' count and
length, the tokens the attention endpoint takes, the size of the maps it returns, and the seconds
of decoding it may take. A request that breaks a bound fails alone, with a status and a message
that say which (413, 422, 503); the model itself is never changed by a request.
"""
from __future__ import annotations

from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

import torch
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from aiayn.checkpoint import kind_of, resolve_checkpoint
from aiayn.decoding.search import DecodingTimeout
from aiayn.decoding.translator import Translator
from aiayn.errors import InputError
from aiayn.family.classifier import TextClassifier
from aiayn.kinds import CLASSIFIER, TRANSLATOR, kinds_with
from aiayn.model import Transformer, parameter_counts
from aiayn.serving.batcher import DynamicBatcher, ModelThread


@dataclass(frozen=True)
class ServiceLimits:
    """What one request may ask of the server."""

    max_sentences: int = 64  # per /v1/translate request
    max_characters: int = 2000  # per sentence (and per attention source or target)
    max_beam: int = 16
    max_body_bytes: int = 2 * 1024 * 1024  # 64 x 2,000 characters as \\uXXXX escapes fit
    max_attention_values: int = 1_000_000  # numbers in one attention response
    decode_timeout_s: float | None = 60.0  # seconds of model work per request


LIMITS = ServiceLimits()


class TranslateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: list[str] = Field(description=f"sentences to translate (at most {LIMITS.max_sentences}, "
                                        f"each at most {LIMITS.max_characters} characters)")
    beam: int = Field(4, ge=1, le=LIMITS.max_beam, description="beam size; 1 is greedy decoding")
    alpha: float = Field(0.6, ge=0.0, le=5.0, description="GNMT length penalty exponent")


class TranslateResponse(BaseModel):
    translations: list[str]
    model: str


class AttentionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    src: str = Field(max_length=LIMITS.max_characters)
    tgt: str | None = Field(None, max_length=LIMITS.max_characters, description="default: the model's translation")
    beam: int = Field(4, ge=1, le=LIMITS.max_beam)
    maps: Literal["alignment", "cross", "all"] = Field(
        "alignment", description="alignment only (what the page draws); every layer and head of the "
                                 "encoder-decoder attention; or also the encoder's and decoder's self-attention")


class AttentionResponse(BaseModel):
    source_tokens: list[str]
    target_tokens: list[str]
    translation: str
    alignment: list[list[float]] = Field(description="last layer's encoder-decoder attention averaged over heads, "
                                                     "[target token][source token]")
    cross: list[list[list[list[float]]]] | None = Field(
        None, description="encoder-decoder attention [layer][head][target][source] (maps: cross or all)")
    encoder: list[list[list[list[float]]]] | None = Field(
        None, description="encoder self-attention [layer][head][source][source] (maps: all)")
    decoder_self: list[list[list[list[float]]]] | None = Field(
        None, description="decoder self-attention [layer][head][target][target] (maps: all)")


class ClassifyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: list[str] = Field(description=f"sentences to classify (at most {LIMITS.max_sentences}, "
                                        f"each at most {LIMITS.max_characters} characters)")


class Label(BaseModel):
    label: str
    score: float


class ClassifyResponse(BaseModel):
    results: list[Label]
    model: str


class ModelInfo(BaseModel):
    model: str
    kind: str
    labels: list[str] | None = None
    checkpoint: str
    languages: dict[str, str | None]
    vocab_size: int
    parameters: dict[str, int]
    config: dict


class Health(BaseModel):
    status: str
    batches: int


def _parameters(config, classifier: TextClassifier | None = None) -> dict[str, int]:
    """The model's parameter counts, from its shapes (an int8 model keeps its weights packed)."""
    if classifier is not None:
        return {"total": sum(p.numel() for p in classifier.model.parameters())}
    with torch.device("meta"):
        return parameter_counts(Transformer(config))


def _check_encodable(field: str, text: str) -> None:
    # JSON can carry lone surrogates ("\ud800") that no UTF-8 tokenizer accepts.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise HTTPException(422, [{"loc": ["body", *field.split(".")], "msg": f"not valid Unicode text ({error.reason})",
                                   "type": "value_error"}]) from None


def _check_texts(texts: list[str], limits: ServiceLimits) -> None:
    if len(texts) > limits.max_sentences:
        raise HTTPException(413, f"text: {len(texts)} sentences; at most {limits.max_sentences} per request")
    for index, text in enumerate(texts):
        if len(text) > limits.max_characters:
            raise HTTPException(413, f"text[{index}]: {len(text)} characters; at most {limits.max_characters} per sentence")
        _check_encodable(f"text.{index}", text)


def _rounded(maps: list[torch.Tensor]) -> list:
    """Weights to 5 decimals: a fifth of the JSON, and finer than any picture shows."""
    return [(layer.double() * 1e5).round().div(1e5).tolist() for layer in maps]


class BodyLimit:
    """ASGI middleware: a request body over `max_bytes` gets 413 before any of it is parsed (the
    declared Content-Length is checked first, then the bytes actually sent)."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length", b"0")
        if not declared.isdigit() or int(declared) > self.max_bytes:
            return await self._refuse(scope, send)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                return await self._refuse(scope, send)
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        delivered = False

        async def replay():
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope, send) -> None:
        response = JSONResponse(status_code=413, content={
            "detail": f"request body over {self.max_bytes} bytes (the server's --max-body-bytes)"})
        await response(scope, None, send)


def _base_app(worker: ModelThread, limits: ServiceLimits, title: str) -> FastAPI:
    """What every service has: the model thread's life, the body limit, errors without echoes,
    /healthz and the page (which adapts to /v1/model's kind)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        worker.start()
        yield
        await worker.stop()

    app = FastAPI(title="aiayn", description=title, version="0.1.0", lifespan=lifespan)
    app.state.worker = worker
    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
        # FastAPI's own handler echoes the offending input, which may hold NaN or infinity that
        # JSON cannot carry (a 500); the field and the reason are what a caller needs.
        detail = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in error.errors()]
        return JSONResponse(status_code=422, content={"detail": detail})

    @app.exception_handler(DecodingTimeout)
    async def too_slow(request: Request, error: DecodingTimeout) -> JSONResponse:
        return JSONResponse(status_code=503, content={
            "detail": f"decoding took longer than the server's limit of {limits.decode_timeout_s:g} s "
                      "(--timeout); send fewer or shorter sentences, or a smaller beam"})

    page = resources.files("aiayn.serving").joinpath("page.html").read_text(encoding="utf-8")

    @app.get("/healthz", response_model=Health)
    async def health() -> Health:
        return Health(status="ok", batches=worker.batches)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> str:
        return page

    return app


def create_app(translator: Translator, name: str, checkpoint: str = "", max_wait_ms: float = 5.0,
               max_batch_tokens: int = 4000, limits: ServiceLimits = LIMITS) -> FastAPI:
    """The app around one loaded translator. max_wait_ms=0 and max_batch_tokens=0 turn batching off."""
    batcher = DynamicBatcher(translator, max_wait_ms, max_batch_tokens, limits.decode_timeout_s)
    app = _base_app(batcher, limits, "Translation with the Transformer of 'Attention Is All You Need'.")
    languages = translator.config.get("languages") or {}
    info = ModelInfo(model=name, kind=TRANSLATOR, checkpoint=checkpoint,
                     languages={"source": languages.get("source"), "target": languages.get("target")},
                     vocab_size=translator.tokenizer.vocab_size, parameters=_parameters(translator.model.config),
                     config=translator.model.config.to_dict())

    @app.post("/v1/translate", response_model=TranslateResponse,
              responses={413: {"description": "too large"}, 503: {"description": "took too long"}})
    async def translate(request: TranslateRequest) -> TranslateResponse:
        _check_texts(request.text, limits)
        translations = await batcher.translate(request.text, request.beam, request.alpha)
        return TranslateResponse(translations=translations, model=name)

    @app.post("/v1/attention", response_model=AttentionResponse, response_model_exclude_none=True,
              responses={413: {"description": "too large"}, 503: {"description": "took too long"}})
    async def attention(request: AttentionRequest) -> AttentionResponse:
        _check_encodable("src", request.src)
        if request.tgt is not None:
            _check_encodable("tgt", request.tgt)
        kinds = {"alignment": ("cross",), "cross": ("cross",), "all": ("encoder", "decoder_self", "cross")}[request.maps]

        def work():
            return translator.attention(request.src, request.tgt, request.beam, kinds, batcher.deadline())

        result = await batcher.call(work)
        detailed = {kind: getattr(result, kind) for kind in kinds} if request.maps != "alignment" else {}
        values = sum(m.numel() for maps in detailed.values() for m in maps)
        if values > limits.max_attention_values:
            raise HTTPException(413, f"maps={request.maps}: {values:,} numbers, more than the "
                                     f"{limits.max_attention_values:,} one response may carry; "
                                     "ask for maps=alignment or send a shorter sentence")
        return AttentionResponse(
            source_tokens=result.source_tokens, target_tokens=result.target_tokens, translation=result.translation,
            alignment=_rounded([result.cross[-1].mean(dim=0)])[0],
            **{kind: _rounded(maps) for kind, maps in detailed.items()})

    @app.get("/v1/model", response_model=ModelInfo)
    async def model_info() -> ModelInfo:
        return info

    return app


def create_classifier_app(classifier: TextClassifier, name: str, checkpoint: str = "",
                          limits: ServiceLimits = LIMITS) -> FastAPI:
    """The app around one sentence classifier (aiayn train-classifier): POST /v1/classify."""
    worker = ModelThread(limits.decode_timeout_s)
    app = _base_app(worker, limits, "Sentence classification with the Transformer's encoder (BERT's recipe).")
    info = ModelInfo(model=name, kind=CLASSIFIER, checkpoint=checkpoint, languages={"source": None, "target": None},
                     vocab_size=classifier.tokenizer.vocab_size, labels=classifier.labels,
                     parameters=_parameters(classifier.model.config, classifier), config=classifier.model.config.to_dict())

    @app.post("/v1/classify", response_model=ClassifyResponse, responses={413: {"description": "too large"}})
    async def classify(request: ClassifyRequest) -> ClassifyResponse:
        _check_texts(request.text, limits)
        found = await worker.call(classifier.classify, request.text) if request.text else []
        worker.batches += bool(request.text)
        return ClassifyResponse(results=[Label(label=label, score=score) for label, score in found], model=name)

    @app.get("/v1/model", response_model=ModelInfo)
    async def model_info() -> ModelInfo:
        return info

    return app


def check_address(host: str, port: int) -> None:
    """Refuse, before loading anything, an address this machine cannot listen on."""
    import socket

    try:
        family, kind, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    except (OSError, UnicodeError) as error:
        raise InputError(f"--host {host} --port {port}: cannot listen there ({error})") from None


def translator_app(path: Path, name: str, device: str, bf16: bool, int8: bool, max_wait_ms: float,
                    max_batch_tokens: int, limits: ServiceLimits, moses_text: bool = False) -> FastAPI:
    translator = Translator.from_checkpoint(path, device=device, bf16=bf16, int8=int8, moses_text=moses_text)
    return create_app(translator, name, str(path), max_wait_ms, max_batch_tokens, limits)


def classifier_app(path: Path, name: str, device: str, bf16: bool, int8: bool, max_wait_ms: float,
                    max_batch_tokens: int, limits: ServiceLimits, moses_text: bool = False) -> FastAPI:
    if bf16 or int8:
        raise InputError(f"{path}: --bf16 and --int8 are for translators; a classifier is served in float32")
    if moses_text:
        raise InputError(f"{path}: --moses-text is for translators; a classifier reads its text as given")
    return create_classifier_app(TextClassifier.from_checkpoint(path, device), name, str(path), limits)


def serve(checkpoint: str, host: str = "127.0.0.1", port: int = 8000, max_wait_ms: float = 5.0,
          max_batch_tokens: int = 4000, device: str = "cpu", bf16: bool = False,
          limits: ServiceLimits = LIMITS, int8: bool = False, moses_text: bool = False) -> None:
    """Load a checkpoint and serve it until SIGINT/SIGTERM; in-flight requests finish first.
    moses_text: a translator of Moses-tokenised lowercased text takes and gives raw text."""
    import uvicorn

    path = resolve_checkpoint(checkpoint, announce=True)
    name = Path(checkpoint).resolve().name
    kind = kind_of(path)  # the registry (aiayn.kinds) names the function that makes each kind's app
    if not kind.app:
        raise InputError(f"{path}: a {kind.name} checkpoint; aiayn serve takes {', '.join(kinds_with('app'))} ones")
    app = kind.part("app")(path, name, device, bf16, int8, max_wait_ms, max_batch_tokens, limits, moses_text)
    uvicorn.run(app, host=host, port=port, log_level="info", timeout_graceful_shutdown=30)
