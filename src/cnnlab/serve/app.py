"""The web demo: one FastAPI app serving the page, its assets and a small JSON API over several trained models.

    GET  /                    the page (static/index.html); GET /static/<file>: its scripts, styles, images
    GET  /api/health          {"status": "ok"}
    GET  /api/model           the served models (id, label, classes, accuracy, parts, a newer run than the one
                              chosen), the default one, what can be trained and whether a training runs
    POST /api/predict         an image -> top classes and all probabilities. The image: a multipart upload (field
                              "file"), JSON {"image": "data:image/...;base64,..."}, or raw bytes with an image/*
                              content type; the model: ?model=<id> or the JSON field "model" (default: the first)
    POST /api/explain         the same, plus parts to switch off (?silence=incep1.5x5, repeated, or the JSON list
                              "silence") and the colour scale ("scale": stage, map or global) -> every stage's
                              shape, arithmetic and maps, branch shares, residual path norms, probabilities
    POST /api/value           the same, plus "stage", "channel", "y", "x" -> how that value was computed (its
                              window, kernel, products, bias; then the pooling and ReLU that follow)
    POST /api/train           {"model", "budget" (s), "dataset", "block" (a design, for a model that takes one)}
                              -> 202: a training starts in its own process
    POST /api/train/stop      {} -> 202: it stops at its next step, keeping what it trained
    GET  /api/train           the training's state and its events so far
    GET  /api/train/events    the same events as a stream (Server-Sent Events), live until `done` or `error`
    POST /api/design          {"design": "inception:1x1=16,5x5=4>24"} -> what the network of that block costs,
                              beside the lecture's own (serve/design.py)

Models load once, when the app is made (and when a training finishes). The work on an image (decoding, preparing,
the model) runs on a fixed pool of `workers` threads (default: the CPU cores): the event loop keeps answering,
and at most `workers` images are held decoded at once (each bounded by the pixel budget of cnnlab.data.tensors.pictures),
with at most IMAGE_REQUESTS request bodies held meanwhile: the memory a burst of requests can take is bounded. Every bad input gets a 4xx answer with
{"error": "<one English line>", "code": "<serve/inputs.ERROR_CODES>", "params": {...}} (the page words the code in
its reader's language), and no answer holds a path of the server's (a data set read from a folder is named by the folder's
own name: "imagefolder:photos").

The API answers the page alone. A request naming a host the server was not started on is refused (403), whatever
it asks: that is how a page of another site reaches a server on 127.0.0.1 through DNS rebinding. A request that
may change something (every method but GET, HEAD and OPTIONS) is refused (403) when the browser says it comes from
a page of another origin (Origin, Sec-Fetch-Site); the orders that start or stop a training are read only as
application/json (else 415), which no other origin's page can send without a CORS preflight that is never granted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import mimetypes
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Iterable

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from cnnlab.data.tensors.pictures import ImageError, ImageTooLarge
from cnnlab.data.sets.registry import entries as dataset_entries
from cnnlab.data.sets.registry import lookup
from cnnlab.inference.explain import SCALES, explain
from cnnlab.inference.values import NoSuchValue, explain_value
from cnnlab.models import get_model, list_models
from cnnlab.models.switches import UnknownPart
from cnnlab.plotting import png_data_url
from cnnlab.runs.rundir import best_finished
from cnnlab.serve.inputs import (BODY_LIMIT, READING_METHODS, RequestError, check_host, check_same_origin, json_order,
                                 number_field, picture_error, read_order, text_field)
from cnnlab.serve.design import design_cost, order_block
from cnnlab.serve.models import NoSuchModel, ServedModel, Shelf
from cnnlab.serve.server import host_names
from cnnlab.serve.training import BUDGET, Trainer


__all__ = ["BODY_LIMIT", "create_app"]

STATIC = resources.files("cnnlab.serve").joinpath("static")
TYPES = {".js": "text/javascript; charset=utf-8", ".mjs": "text/javascript; charset=utf-8",
         ".css": "text/css; charset=utf-8", ".html": "text/html; charset=utf-8", ".json": "application/json",
         ".svg": "image/svg+xml", ".png": "image/png", ".ico": "image/x-icon", ".woff2": "font/woff2",
         ".woff": "font/woff", ".ttf": "font/ttf", ".txt": "text/plain; charset=utf-8", ".webp": "image/webp"}
# Image requests in progress at once (their bodies read, or waiting for the pool); more wait before their body is
# read. Each holds at most about two copies of a BODY_LIMIT body, so together they hold at most ~350 MB.
IMAGE_REQUESTS = 32
SSE_PING = 15.0  # seconds between keep-alive comments on an event stream that has nothing to say


def create_app(runs: Iterable[str | Path] = (), runs_root: str | Path = "runs", workers: int | None = None,
               training: bool = True, device: str = "cpu", host: str = "127.0.0.1",
               allow_hosts: Iterable[str] = ()) -> FastAPI:
    """The app serving `runs` (run directories or checkpoint files; none: the best finished run of each model under
    `runs_root` (runs/rundir.best_finished), and none there serves nothing until a training from the page finishes).

    Args:
        runs: what to serve; a run that cannot be loaded raises CheckpointError here, before anything is served.
        runs_root: where trainings from the page write their runs, and where runs are looked for without `runs`.
        workers: threads working on images at once (default: the CPU cores).
        training: False refuses the training endpoints (403).
        device: where the served models run (one picture at a time: the CPU answers faster than a round trip to a GPU).
        host: the address the server is bound to. Requests are answered only when their Host header names it, or
            127.0.0.1, localhost or [::1] when it is loopback or every address (0.0.0.0, ::). The default, loopback,
            suits an app served on this machine (uvicorn's own default) and a TestClient given
            base_url="http://127.0.0.1"; an app served under another name needs that name here or in `allow_hosts`.
        allow_hosts: other names the server is reached by (ValueError for one that is not a host name).

    `app.state.skipped` lists, one line each, the runs found under `runs_root` that were passed by, and why.
    """
    names = host_names(host, allow_hosts)
    skipped: list[str] = []
    shelf = _shelf(list(runs), runs_root, device, skipped)
    pool = ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1, thread_name_prefix="cnnlab-image")
    trainer = Trainer(runs_root, lambda run_dir: shelf.load(run_dir).id)
    serving = _Serving(shelf, trainer, training, pool, asyncio.Semaphore(IMAGE_REQUESTS))

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        await asyncio.get_running_loop().run_in_executor(None, trainer.close)
        pool.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="cnnlab", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.shelf, app.state.trainer, app.state.skipped = shelf, trainer, skipped
    app.add_middleware(_OwnPageOnly, names=names)
    app.add_exception_handler(RequestError, _request_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    _add_page_routes(app, _assets())
    _add_model_routes(app, serving)
    _add_training_routes(app, serving)
    return app


@dataclass
class _Serving:
    """What the routes of one app share."""

    shelf: Shelf
    trainer: Trainer
    training: bool  # whether the training endpoints answer
    pool: ThreadPoolExecutor  # the threads that work on images
    image_slots: asyncio.Semaphore  # image requests in progress at once (IMAGE_REQUESTS)


def _shelf(runs: list[str | Path], runs_root: str | Path, device: str, skipped: list[str]) -> Shelf:
    """The models to serve: `runs` (a bad one raises), else the best finished run of each model under `runs_root`
    (a bad one is passed by, and said in `skipped`)."""
    shelf = Shelf(device)
    if runs:
        shelf.load_all(runs)
        return shelf
    for chosen in best_finished(runs_root, skipped):
        try:
            shelf.load(chosen.run.path, chosen)
        except Exception as e:  # a broken run among many is passed by, and said
            skipped.append(f"{chosen.run.path.name}: {_first_line(e)}")
    return shelf


async def _request_error(request: Request, exc: RequestError) -> JSONResponse:
    return JSONResponse(exc.answer(), status_code=exc.status)


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    answer = RequestError(exc.status_code, str(exc.detail), "http.status", status=exc.status_code).answer()
    return JSONResponse(answer, status_code=exc.status_code, headers=exc.headers)


# ---- the page and its assets ----------------------------------------------------------------------------------

def _add_page_routes(app: FastAPI, assets: dict[str, Any]) -> None:
    @app.get("/")
    async def index() -> Response:
        return _asset(assets, "index.html")

    @app.get("/static/{name}")
    async def static(name: str) -> Response:
        return _asset(assets, name)


# ---- models -----------------------------------------------------------------------------------------------------

def _add_model_routes(app: FastAPI, serving: _Serving) -> None:
    @app.get("/api/health")
    async def health() -> dict:
        return {"status": "ok"}

    @app.get("/api/model")
    async def models() -> dict:
        return {
            "models": serving.shelf.describe(),
            "default": serving.shelf.default,
            "trainable": list_models(),
            "datasets": [{"name": e.name, "title": e.title} for e in dataset_entries() if not e.takes_path],
            "budget": {"min": BUDGET[0], "max": BUDGET[1]},
            "training": {"enabled": serving.training, "state": serving.trainer.status()["state"]},
        }

    @app.post("/api/predict")
    async def predict(request: Request) -> dict:
        return await _answer(serving, request, _predicted)

    @app.post("/api/explain")
    async def explain_route(request: Request) -> dict:
        return await _answer(serving, request, _explained)

    @app.post("/api/value")
    async def value_route(request: Request) -> dict:
        return await _answer(serving, request, _value)


async def _answer(serving: _Serving, request: Request, work: Callable[[ServedModel, Any], dict]) -> dict:
    """Read an image request and answer it with `work(model, order)` on the pool; a slot is held from the first
    byte of the body to the answer, so that the bodies held at once are bounded too."""
    async with serving.image_slots:
        order = await read_order(request)
        served = _chosen(serving.shelf, order.model)
        t0 = time.perf_counter()
        out = await _on_pool(serving.pool, lambda: work(served, order))
    out["model"] = served.id
    out["milliseconds"] = round(1000 * (time.perf_counter() - t0), 2)
    return out


async def _on_pool(pool: ThreadPoolExecutor, fn: Callable[[], Any]) -> Any:
    """`fn` on the image pool, its picture errors made 4xx answers."""
    try:
        return await asyncio.get_running_loop().run_in_executor(pool, fn)
    except ImageTooLarge as e:
        raise picture_error(e, 413) from None
    except UnknownPart as e:
        names = ", ".join(map(str, e.unknown))
        if e.valid:
            raise RequestError(422, str(e), "part.unknown", parts=names, valid=", ".join(e.valid)) from None
        raise RequestError(422, str(e), "part.no_parts", parts=names) from None
    except ImageError as e:
        raise picture_error(e, 422) from None
    except NoSuchValue as e:
        raise RequestError(422, str(e), "value.missing", reason=str(e)) from None
    except (ValueError, ArithmeticError) as e:  # a picture the preparation did not foresee: still the client's
        raise RequestError(422, f"the image could not be prepared ({_first_line(e)})", "image.unprepared",
                           reason=_first_line(e)) from None


def _chosen(shelf: Shelf, model_id: str | None) -> ServedModel:
    try:
        return shelf.get(model_id)
    except NoSuchModel as e:
        raise RequestError(404 if e.served else 409, str(e), e.code, **e.params) from None


def _predicted(served: ServedModel, order) -> dict:
    pred = served.trained.predict(order.image)
    return {**pred.as_dict(), "image": png_data_url(pred.image)}


def _explained(served: ServedModel, order) -> dict:
    scale = order.fields.get("scale", "stage")
    if scale not in SCALES:
        raise RequestError(422, f"unknown scale {scale!r}; choose from {', '.join(SCALES)}", "scale.unknown",
                           scale=str(scale)[:40], valid=", ".join(SCALES))
    return explain(served.trained, order.image, order.silence, scale=scale).as_dict()


def _value(served: ServedModel, order) -> dict:
    """How one value of the inside view was computed: the order names its stage, channel, y and x."""
    where = {}
    for key in ("stage", "channel", "y", "x"):
        v = order.fields.get(key)
        if isinstance(v, str) and v.isdigit() and len(v) < 9:  # from the query string
            v = int(v)
        if isinstance(v, bool) or not isinstance(v, int):
            raise RequestError(422, f"'{key}' must be a whole number", "value.missing",
                               reason=f"'{key}' must be a whole number")
        where[key] = v
    return explain_value(served.trained, order.image, where["stage"], where["channel"], where["y"], where["x"],
                         order.silence)


# ---- training ---------------------------------------------------------------------------------------------------

def _add_training_routes(app: FastAPI, serving: _Serving) -> None:
    trainer = serving.trainer

    def trainable() -> None:
        if not serving.training:
            raise RequestError(403, "training from the page is switched off on this server (cnnlab serve --no-training)",
                               "training.off")

    @app.post("/api/train", status_code=202)
    async def train(request: Request) -> dict:
        trainable()
        doc = await json_order(request)
        model, budget, dataset, block = _training_order(doc)
        job = trainer.start(model, budget, dataset, block)  # TrainingRefused is a RequestError: answered as one
        return {"job": job.id, "model": job.model, "budget": job.budget, "block": job.block}

    @app.post("/api/train/stop", status_code=202)
    async def train_stop(request: Request) -> dict:
        trainable()
        await json_order(request, empty_allowed=True)  # nothing to read in it, but only the page may send it
        trainer.stop()
        return {"stopping": True}

    @app.get("/api/train")
    async def train_state() -> dict:
        trainable()
        return trainer.snapshot()

    @app.get("/api/train/events")
    async def train_events() -> StreamingResponse:
        trainable()
        return StreamingResponse(_sse(trainer), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.post("/api/design")
    async def design(request: Request) -> dict:
        doc = await json_order(request)
        return await asyncio.get_running_loop().run_in_executor(serving.pool, lambda: design_cost(doc))


def _training_order(doc: dict) -> tuple[str, float, str, str]:
    """(model, budget, data set, block design) of a training order, each looked up in its registry (422 naming the
    valid ones), the design checked against the model (serve/design.order_block); the names go on to the training
    process, which holds the entries."""
    model = text_field(doc, "model", required=True)
    try:
        entry = get_model(model)
    except ValueError:
        raise RequestError(422, f"unknown model {model!r}; valid: {', '.join(list_models())}", "training.model",
                           model=model, valid=", ".join(list_models())) from None
    budget = number_field(doc, "budget", *BUDGET)
    dataset = text_field(doc, "dataset") or "mnist"
    try:
        named = lookup(dataset)
    except ValueError:
        named = None
    if named is None or named.entry.takes_path:  # a folder on the server's disk is not the page's to name
        datasets = [e.name for e in dataset_entries() if not e.takes_path]
        raise RequestError(422, f"unknown dataset {dataset!r}; valid: {', '.join(datasets)}", "training.dataset",
                           dataset=dataset, valid=", ".join(datasets))
    return model, budget, dataset, order_block(entry, doc)


async def _sse(trainer: Trainer):
    """The training's events as Server-Sent Events, with a comment line now and then so that the connection is
    seen to be alive while an epoch is evaluated."""
    events = trainer.follow().__aiter__()
    pending: asyncio.Task | None = None
    try:
        while True:
            pending = pending or asyncio.ensure_future(events.__anext__())
            done, _ = await asyncio.wait({pending}, timeout=SSE_PING)
            if not done:
                yield ": ping\n\n"
                continue
            try:
                name, data = pending.result()
            except StopAsyncIteration:
                return
            pending = None
            yield f"event: {name}\ndata: {json.dumps(data)}\n\n"
    finally:
        if pending is not None and not pending.done():
            pending.cancel()


class _OwnPageOnly:
    """Refuses, before any route sees it, a request naming a host this server does not answer to, and one that
    may change something sent by a page of another origin (inputs.check_host, inputs.check_same_origin). Plain
    ASGI, so that the event stream passes through unbuffered."""

    def __init__(self, app: ASGIApp, names: frozenset[str]) -> None:
        self.app, self.names = app, names

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = Headers(scope=scope)
            try:
                check_host(headers.getlist("host"), self.names)
                if scope["method"] not in READING_METHODS:
                    check_same_origin(scope.get("scheme", "http"), headers["host"], headers.get("origin"),
                                      headers.get("sec-fetch-site"))
            except RequestError as e:
                await JSONResponse(e.answer(), status_code=e.status)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _first_line(e: BaseException) -> str:
    return str(e).splitlines()[0][:200] if str(e) else type(e).__name__


def _assets() -> dict[str, Any]:
    """The page's files by name: only what is in the static folder itself is ever served (no path from a request
    reaches the file system)."""
    try:
        return {f.name: f for f in STATIC.iterdir() if f.is_file() and not f.name.startswith(".")}
    except OSError:
        return {}


def _asset(assets: dict[str, Any], name: str) -> Response:
    f = assets.get(name)
    if f is None:
        raise RequestError(404, f"no such file: {name}", "page.missing", name=name)
    suffix = Path(name).suffix.lower()
    kind = TYPES.get(suffix) or mimetypes.guess_type(name)[0] or "application/octet-stream"
    return Response(f.read_bytes(), media_type=kind,
                    headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"})
