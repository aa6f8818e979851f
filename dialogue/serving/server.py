"""``csrl serve``: the reward and the policy as an HTTP JSON API (FastAPI), batching concurrent requests.

Endpoints: ``POST /v1/score`` (see :mod:`csrl.dialogue.serving.scoring` for the record shape), ``POST /v1/reply``
(the policy's next turn, see :mod:`csrl.dialogue.serving.reply_api`), ``GET /`` (a chat page over ``/v1/reply``),
``GET /healthz``, and the OpenAPI schema at ``/openapi.json`` (browsable at ``/docs``).

Concurrent requests are served together: each request's records go on a queue, and one worker per endpoint
takes everything waiting (up to ``max_batch`` records, after at most ``max_wait_ms``) into one reward call (or
one batched generation per decoding), so the models see large batches under load and single requests stay fast.
"""

from __future__ import annotations

import asyncio
import hmac
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.resources import files

from fastapi import Depends, FastAPI, Header, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from csrl.dialogue.serving.reply_api import ReplyRequest, ReplyResponse, ReplyService
from csrl.dialogue.serving.scoring import ScoreRequest, ScoreResponse, TurnScorer, describe_validation_error

DEFAULT_MAX_BODY_BYTES = 1_000_000


class ErrorResponse(BaseModel):
    """Every 4xx answer: what was wrong with the request."""

    error: str


@dataclass
class _Job:
    records: list
    future: asyncio.Future = field(repr=False)


class MicroBatcher:
    """Collects the records of concurrent requests into batches for one ``process(records)`` call each.

    Args:
        process: records in, one result per record out, in order (CPU-bound: it runs in a worker thread).
        max_batch: most records in one call.
        max_wait_ms: how long to wait for more requests to join a batch.
    """

    def __init__(self, process: Callable[[list], list], max_batch: int = 128, max_wait_ms: float = 5.0):
        self.process = process
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000
        self.queue: asyncio.Queue[_Job] = asyncio.Queue()
        self.batches = 0
        self._worker: asyncio.Task | None = None

    def start(self) -> None:
        """Start the worker on the running event loop."""
        self._worker = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stop the worker."""
        if self._worker:
            self._worker.cancel()

    async def submit(self, records: list) -> list:
        """Process ``records`` in whatever batch they join; returns their results in order."""
        future = asyncio.get_running_loop().create_future()
        await self.queue.put(_Job(records, future))
        return await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = [await self.queue.get()]
            size = len(jobs[0].records)
            deadline = loop.time() + self.max_wait
            while size < self.max_batch:
                timeout = deadline - loop.time()
                if timeout <= 0:
                    break
                try:
                    job = await asyncio.wait_for(self.queue.get(), timeout)
                except TimeoutError:
                    break
                jobs.append(job)
                size += len(job.records)
            records = [r for job in jobs for r in job.records]
            try:  # the models are CPU-bound: keep the event loop free to accept requests
                results = await asyncio.to_thread(self.process, records)
            except Exception as err:  # noqa: BLE001 - every waiting request must hear about it
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(err)
                continue
            self.batches += 1
            start = 0
            for job in jobs:
                if not job.future.done():
                    job.future.set_result(results[start : start + len(job.records)])
                start += len(job.records)


def create_app(
    scorer: TurnScorer,
    *,
    replies: ReplyService | None = None,
    run_name: str = "",
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    token: str | None = None,
    max_batch: int = 128,
    max_wait_ms: float = 5.0,
) -> FastAPI:
    """The FastAPI app serving ``scorer``.

    Args:
        scorer: the run's turn scorer.
        replies: the run's policy answering ``/v1/reply`` and the chat page (``None``: scoring only, both 404).
        run_name: shown by ``/healthz``.
        max_body_bytes: larger request bodies get 413.
        token: if set, ``/v1/score`` and ``/v1/reply`` require ``Authorization: Bearer <token>``.
        max_batch: most turns scored in one reward call (dialogues answered in one generation: a quarter of it).
        max_wait_ms: how long the batcher waits for more requests to join a batch.
    """
    models = threading.Lock()  # both endpoints share the encoder and its cache: one model call at a time

    def one_at_a_time(process: Callable[[list], list]) -> Callable[[list], list]:
        def locked(records: list) -> list:
            with models:
                return process(records)

        return locked

    batcher = MicroBatcher(one_at_a_time(scorer.score), max_batch=max_batch, max_wait_ms=max_wait_ms)
    reply_batcher = None
    if replies is not None:
        reply_batcher = MicroBatcher(one_at_a_time(replies.reply), max_batch=max(1, max_batch // 4),
                                     max_wait_ms=max_wait_ms)  # fmt: skip
    batchers = [b for b in (batcher, reply_batcher) if b is not None]

    async def lifespan(app: FastAPI):
        for b in batchers:
            b.start()
        yield
        for b in batchers:
            await b.stop()

    app = FastAPI(
        title="csrl API",
        version="1",
        description="Score customer-service bot turns with csrl's multi-stage process reward, and answer with the "
        "trained policy.",
        lifespan=lifespan,
    )
    app.state.batcher = batcher

    @app.middleware("http")
    async def limit_body_size(request: Request, call_next):
        if request.method in ("POST", "PUT", "PATCH"):
            declared = request.headers.get("content-length")
            if declared is None or not declared.isdigit():
                return _error(411, "send a Content-Length header (chunked request bodies are not accepted)")
            if int(declared) > max_body_bytes:
                return _error(413, f"request body of {declared} bytes is over the limit of {max_body_bytes} bytes")
        return await call_next(request)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, err: RequestValidationError):
        errors = err.errors()
        broken = [e for e in errors if e.get("type") == "json_invalid"]
        if broken:
            return _error(400, f"body is not valid JSON: {broken[0].get('ctx', {}).get('error', 'parse error')}")
        for e in errors:  # locations read "body.turns[0].reply": the body is implied
            e["loc"] = tuple(e["loc"][1:]) if e["loc"][:1] == ("body",) else e["loc"]
        return _error(422, describe_validation_error(ValidationError.from_exception_data("request", errors)))

    async def check_token(authorization: str | None = Header(default=None)) -> None:
        if token is None:
            return
        if authorization is None or not hmac.compare_digest(authorization.encode(), f"Bearer {token}".encode()):
            raise HTTPException(401, "missing or wrong bearer token: send 'Authorization: Bearer <token>'")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException):
        return _error(err.status_code, str(err.detail))

    @app.get("/healthz")
    async def healthz() -> dict:
        """Liveness and what is loaded."""
        return {
            "status": "ok",
            "run": run_name,
            "pid": os.getpid(),  # which worker answered, with `csrl serve --workers N`
            "components": sorted(scorer.reward.components),
            "intents": len(scorer.intents),
            "batches_scored": batcher.batches,
            "policy": replies is not None,
            "batches_replied": reply_batcher.batches if reply_batcher else 0,
        }

    error_responses = {code: {"model": ErrorResponse} for code in (400, 401, 411, 413, 422)}

    @app.post("/v1/score", response_model=ScoreResponse, responses=error_responses, dependencies=[Depends(check_token)])
    async def score(body: ScoreRequest) -> ScoreResponse | JSONResponse:
        """Score a batch of bot turns; each result has the total reward and its per-stage breakdown."""
        problems = [f"turns[{i}]: {problem}" for i, r in enumerate(body.turns) if (problem := scorer.check_intents(r))]
        if problems:
            return _error(422, "; ".join(problems))
        return ScoreResponse(results=await batcher.submit(body.turns))

    @app.post("/v1/reply", response_model=ReplyResponse, responses={**error_responses, 404: {"model": ErrorResponse}},
              dependencies=[Depends(check_token)])  # fmt: skip
    async def reply(body: ReplyRequest) -> ReplyResponse | JSONResponse:
        """The policy's next turn for each dialogue (intent, search, documents, reply) with its reward breakdown."""
        if replies is None:
            return _error(404, "this server has no policy: start it with --policy ppo (or sft)")
        problems = [f"dialogues[{i}]: {p}" for i, d in enumerate(body.dialogues) if (p := replies.check_knowledge(d))]
        if problems:
            return _error(422, "; ".join(problems))
        return ReplyResponse(results=await reply_batcher.submit([(d, body.decoding) for d in body.dialogues]))

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def chat_page() -> HTMLResponse:
        """A chat page over ``/v1/reply``: type as the customer, see each turn's process and scores."""
        if replies is None:
            return _error(404, "this server has no policy: start it with --policy ppo (or sft) for the chat page")
        return HTMLResponse(CHAT_PAGE)

    return app


# the page is plain HTML + JavaScript, shipped with the package (no build step)
CHAT_PAGE = files("csrl.dialogue.serving").joinpath("chat.html").read_text(encoding="utf-8")


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": message})
