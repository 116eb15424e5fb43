"""Dynamic batching: concurrent requests gathered for a few milliseconds into one decoding batch."""
from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiayn.decoding.translator import Translator

T = TypeVar("T")


@dataclass
class _Job:
    ids: list[list[int]]
    options: tuple[int, float]  # (beam, alpha): only jobs decoded alike share a batch
    future: asyncio.Future
    tokens: int = field(init=False)

    def __post_init__(self) -> None:
        self.tokens = sum(len(s) + 1 for s in self.ids)


class DynamicBatcher:
    """Runs every model call on one worker thread; translation requests that arrive within
    `max_wait_ms` of each other (up to `max_batch_tokens` source tokens) are decoded together, and
    each caller gets its own sentences back. `max_wait_ms=0, max_batch_tokens=0` serves one request
    at a time (the baseline the benchmark compares with)."""

    def __init__(self, translator: Translator, max_wait_ms: float = 5.0, max_batch_tokens: int = 4000):
        self.translator = translator
        self.max_wait = max_wait_ms / 1000.0
        self.max_batch_tokens = max_batch_tokens
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="aiayn-model")
        self.queue: asyncio.Queue[_Job] = asyncio.Queue()
        self.batches = 0  # decoding batches run, for /healthz and tests
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._serve())

    async def stop(self) -> None:
        if self.task:
            self.task.cancel()
            try:
                await self.task
            except asyncio.CancelledError:
                pass
        self.executor.shutdown(wait=True)

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run any model work on the worker thread (serialised with the decoding batches)."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def translate(self, texts: list[str], beam: int, alpha: float) -> list[str]:
        if not texts:
            return []
        ids = self.translator.tokenizer.encode(texts)
        job = _Job(ids, (beam, alpha), asyncio.get_running_loop().create_future())
        await self.queue.put(job)
        outputs: list[list[int]] = await job.future
        return self.translator.tokenizer.decode(outputs)

    async def _gather(self) -> list[_Job]:
        first = await self.queue.get()
        jobs, tokens, waiting = [first], first.tokens, []
        deadline = time.monotonic() + self.max_wait
        while tokens < self.max_batch_tokens:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                job = await asyncio.wait_for(self.queue.get(), remaining)
            except asyncio.TimeoutError:
                break
            if job.options == first.options and tokens + job.tokens <= self.max_batch_tokens:
                jobs.append(job)
                tokens += job.tokens
            else:
                waiting.append(job)
        for job in waiting:  # decoded differently, or over budget: first in the next batch
            self.queue.put_nowait(job)
        return jobs

    async def _serve(self) -> None:
        while True:
            jobs = await self._gather()
            beam, alpha = jobs[0].options
            sentences = [s for job in jobs for s in job.ids]
            try:
                found = await self.call(lambda: self.translator.translate_ids(sentences, beam=beam, alpha=alpha))
            except Exception as error:  # noqa: BLE001 - a failure belongs to these requests only
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(error)
                continue
            self.batches += 1
            start = 0
            for job in jobs:
                if not job.future.done():  # the caller may have gone away
                    job.future.set_result([h[0].tokens for h in found[start:start + len(job.ids)]])
                start += len(job.ids)
