"""The HTTP service: translate, attention, model facts, health, and a page that shows the attention.

    POST /v1/translate  {"text": ["...", ...], "beam": 4, "alpha": 0.6} -> {"translations": [...], "model": ...}
    POST /v1/attention  {"src": "...", "tgt": "..." (optional)}          -> tokens and weight matrices
    GET  /v1/model, GET /healthz, GET / (the page)
"""
from __future__ import annotations

from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from aiayn.decoding.translator import Translator
from aiayn.model import parameter_counts
from aiayn.serving.batcher import DynamicBatcher

MAX_SENTENCES = 64  # per request
MAX_CHARACTERS = 2000  # per sentence
MAX_BEAM = 16


class TranslateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: list[str] = Field(description=f"sentences to translate (at most {MAX_SENTENCES}, "
                                        f"each at most {MAX_CHARACTERS} characters)")
    beam: int = Field(4, ge=1, le=MAX_BEAM, description="beam size; 1 is greedy decoding")
    alpha: float = Field(0.6, ge=0.0, le=5.0, description="GNMT length penalty exponent")


class TranslateResponse(BaseModel):
    translations: list[str]
    model: str


class AttentionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    src: str = Field(max_length=MAX_CHARACTERS)
    tgt: str | None = Field(None, max_length=MAX_CHARACTERS, description="default: the model's translation")
    beam: int = Field(4, ge=1, le=MAX_BEAM)


class AttentionResponse(BaseModel):
    source_tokens: list[str]
    target_tokens: list[str]
    translation: str
    alignment: list[list[float]] = Field(description="last layer's encoder-decoder attention averaged over heads, "
                                                     "[target token][source token]")
    cross: list[list[list[list[float]]]] = Field(description="encoder-decoder attention [layer][head][target][source]")


class ModelInfo(BaseModel):
    model: str
    checkpoint: str
    languages: dict[str, str | None]
    vocab_size: int
    parameters: dict[str, int]
    config: dict


class Health(BaseModel):
    status: str
    batches: int


def _check_encodable(field: str, text: str) -> None:
    # JSON can carry lone surrogates ("\ud800") that no UTF-8 tokenizer accepts.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise HTTPException(422, [{"loc": ["body", *field.split(".")], "msg": f"not valid Unicode text ({error.reason})",
                                   "type": "value_error"}]) from None


def _check_limits(texts: list[str]) -> None:
    if len(texts) > MAX_SENTENCES:
        raise HTTPException(413, f"text: {len(texts)} sentences; at most {MAX_SENTENCES} per request")
    for index, text in enumerate(texts):
        if len(text) > MAX_CHARACTERS:
            raise HTTPException(413, f"text[{index}]: {len(text)} characters; at most {MAX_CHARACTERS} per sentence")
        _check_encodable(f"text.{index}", text)


def create_app(translator: Translator, name: str, checkpoint: str = "", max_wait_ms: float = 5.0,
               max_batch_tokens: int = 4000) -> FastAPI:
    """The app around one loaded translator. max_wait_ms=0 and max_batch_tokens=0 turn batching off."""
    batcher = DynamicBatcher(translator, max_wait_ms, max_batch_tokens)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="aiayn", description="Translation with the Transformer of 'Attention Is All You Need'.",
                  version="0.1.0", lifespan=lifespan)
    app.state.batcher = batcher

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
        # FastAPI's own handler echoes the offending input, which may hold NaN or infinity that
        # JSON cannot carry (a 500); the field and the reason are what a caller needs.
        detail = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in error.errors()]
        return JSONResponse(status_code=422, content={"detail": detail})
    languages = translator.config.get("languages") or {}
    info = ModelInfo(model=name, checkpoint=checkpoint,
                     languages={"source": languages.get("source"), "target": languages.get("target")},
                     vocab_size=translator.tokenizer.vocab_size, parameters=parameter_counts(translator.model),
                     config=translator.model.config.to_dict())
    page = resources.files("aiayn.serving").joinpath("page.html").read_text(encoding="utf-8")

    @app.post("/v1/translate", response_model=TranslateResponse, responses={413: {"description": "too large"}})
    async def translate(request: TranslateRequest) -> TranslateResponse:
        _check_limits(request.text)
        translations = await batcher.translate(request.text, request.beam, request.alpha)
        return TranslateResponse(translations=translations, model=name)

    @app.post("/v1/attention", response_model=AttentionResponse)
    async def attention(request: AttentionRequest) -> AttentionResponse:
        _check_encodable("src", request.src)
        if request.tgt is not None:
            _check_encodable("tgt", request.tgt)
        result = await batcher.call(translator.attention, request.src, request.tgt, request.beam)
        return AttentionResponse(
            source_tokens=result.source_tokens, target_tokens=result.target_tokens, translation=result.translation,
            alignment=result.cross[-1].mean(dim=0).tolist(), cross=[layer.tolist() for layer in result.cross])

    @app.get("/v1/model", response_model=ModelInfo)
    async def model_info() -> ModelInfo:
        return info

    @app.get("/healthz", response_model=Health)
    async def health() -> Health:
        return Health(status="ok", batches=batcher.batches)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> str:
        return page

    return app


def serve(checkpoint: str, host: str = "127.0.0.1", port: int = 8000, max_wait_ms: float = 5.0,
          max_batch_tokens: int = 4000, device: str = "cpu", bf16: bool = False) -> None:
    """Load a checkpoint and serve it until SIGINT/SIGTERM; in-flight requests finish first."""
    import uvicorn

    from aiayn.checkpoint import resolve_checkpoint

    path = resolve_checkpoint(checkpoint, announce=True)
    translator = Translator.from_checkpoint(path, device=device, bf16=bf16)
    name = Path(checkpoint).resolve().name
    app = create_app(translator, name, str(path), max_wait_ms, max_batch_tokens)
    uvicorn.run(app, host=host, port=port, log_level="info", timeout_graceful_shutdown=30)
