"""Dynamic batching: concurrent requests gathered for a few milliseconds into one decoding batch."""
from __future__ import annotations

import asyncio
import time
from collections import deque
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
    deadline: float | None = None  # by when its decoding must end; set when first decoded

    def __post_init__(self) -> None:
        self.tokens = sum(len(s) + 1 for s in self.ids)


class ModelThread:
    """Every model call on one worker thread, in turn: a request's work never runs beside
    another's, and the event loop stays free to take requests. A call gets `timeout_s` seconds
    (its work checks `deadline()`)."""

    def __init__(self, timeout_s: float | None = None):
        self.timeout_s = timeout_s
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="aiayn-model")
        self.task: asyncio.Task | None = None
        self.batches = 0  # model calls for requests, for /healthz and tests

    def start(self) -> None:
        pass

    async def stop(self) -> None:
        if self.task:
            self.task.cancel()
            try:
                await self.task
            except asyncio.CancelledError:
                pass
        self.executor.shutdown(wait=True)

    def deadline(self) -> float | None:
        """The time.monotonic() by which a model call starting now must end."""
        return None if self.timeout_s is None else time.monotonic() + self.timeout_s

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run any model work on the worker thread (serialised with everything else)."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)


class DynamicBatcher(ModelThread):
    """Translation requests that arrive within `max_wait_ms` of each other (up to
    `max_batch_tokens` source tokens) are decoded together on the model thread, and each caller
    gets its own sentences back. `max_wait_ms=0, max_batch_tokens=0` serves one request at a time
    (the baseline the benchmark compares with).

    Requests are served in arrival order: the oldest waiting request heads the next batch, and
    later ones decoded alike join it while they fit; the others keep their places. A request gets
    `timeout_s` seconds of decoding from when its batch starts (DecodingTimeout after that). If a
    batch fails, its requests are decoded again one by one, smallest first, all within one more
    time limit: only the request at fault fails, and a failed batch costs the model at most twice
    the time limit.
    """

    def __init__(self, translator: Translator, max_wait_ms: float = 5.0, max_batch_tokens: int = 4000,
                 timeout_s: float | None = None):
        super().__init__(timeout_s)
        self.translator = translator
        self.max_wait = max_wait_ms / 1000.0
        self.max_batch_tokens = max_batch_tokens
        self.pending: deque[_Job] = deque()
        self.arrived = asyncio.Event()
        # Text to ids and back off the event loop (with --moses-text it passes through sacremoses,
        # pure Python that would hold up every other request and /healthz), on one thread of its
        # own: requests are encoded, and so queued, in the order they arrived.
        self.text_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="aiayn-text")

    async def stop(self) -> None:
        await super().stop()
        self.text_thread.shutdown(wait=True)

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._serve())

    async def translate(self, texts: list[str], beam: int, alpha: float) -> list[str]:
        if not texts:
            return []
        loop = asyncio.get_running_loop()
        ids = await loop.run_in_executor(self.text_thread, self.translator.tokenizer.encode, texts)
        job = _Job(ids, (beam, alpha), loop.create_future())
        self.pending.append(job)
        self.arrived.set()
        outputs: list[list[int]] = await job.future
        return await loop.run_in_executor(self.text_thread, self.translator.tokenizer.decode, outputs)

    def _select(self) -> tuple[list[_Job], bool]:
        """The oldest live job and the later ones that can share its batch; and whether the
        batch is closed (its token budget reached)."""
        while self.pending and self.pending[0].future.done():  # callers that went away
            self.pending.popleft()
        if not self.pending:
            return [], False
        head = self.pending[0]
        jobs, tokens = [head], head.tokens
        for job in list(self.pending)[1:]:
            if job.options == head.options and not job.future.done() and tokens + job.tokens <= self.max_batch_tokens:
                jobs.append(job)
                tokens += job.tokens
        return jobs, tokens >= self.max_batch_tokens

    async def _next_batch(self) -> list[_Job]:
        jobs: list[_Job] = []
        while not jobs:
            self.arrived.clear()
            jobs, _ = self._select()
            if not jobs:
                await self.arrived.wait()
        until = time.monotonic() + self.max_wait
        while True:
            jobs, full = self._select()
            remaining = until - time.monotonic()
            if full or remaining <= 0:
                break
            self.arrived.clear()
            try:
                await asyncio.wait_for(self.arrived.wait(), remaining)
            except asyncio.TimeoutError:
                pass
        for job in jobs:
            self.pending.remove(job)
        return jobs

    def _decode(self, sentences: list[list[int]], beam: int, alpha: float, deadline: float | None) -> list[list[int]]:
        found = self.translator.translate_ids(sentences, beam=beam, alpha=alpha, deadline=deadline)
        return [h[0].tokens for h in found]

    async def _run(self, jobs: list[_Job]) -> None:
        jobs = [job for job in jobs if not job.future.done()]  # callers that went away need nothing
        if not jobs:
            return
        for job in jobs:
            job.deadline = job.deadline or self.deadline()
        beam, alpha = jobs[0].options
        deadline = None if self.timeout_s is None else min(job.deadline for job in jobs)
        try:
            found = await self.call(self._decode, [s for job in jobs for s in job.ids], beam, alpha, deadline)
        except Exception as error:  # noqa: BLE001 - a failure belongs to the request at fault only
            if len(jobs) == 1:
                if not jobs[0].future.done():
                    jobs[0].future.set_exception(error)
                return
            # Find the one at fault: each again, alone, smallest first, all within one more time limit.
            retry_deadline = self.deadline()
            for job in sorted(jobs, key=lambda job: job.tokens):
                job.deadline = retry_deadline
                await self._run([job])
            return
        self.batches += 1
        start = 0
        for job in jobs:
            if not job.future.done():  # the caller may have gone away
                job.future.set_result(found[start:start + len(job.ids)])
            start += len(job.ids)

    async def _serve(self) -> None:
        while True:
            await self._run(await self._next_batch())
