"""The web demo: one FastAPI app serving one static page and a small JSON API.

    GET  /              the drawing page (static/index.html)
    POST /api/predict   an image: a multipart upload (field "file"), a JSON {"image": "data:image/...;base64,..."},
                        or the raw bytes with an image/* content type -> top classes and all probabilities
    GET  /api/health    {"status": "ok"}
    GET  /api/model     name, parameters, epoch and test accuracy recorded in the checkpoint

The model loads once, when the app is made. Predictions run in worker threads (at most one per CPU core;
`cnnlab serve` gives PyTorch one thread each, since one image is too small to split), so the event loop
keeps answering while the model works. A request body is
read in chunks and refused with 413 as soon as it passes the limit, before it is held whole. Every bad input
gets a 4xx answer with {"error": "..."}; nothing a client sends makes the server fail.
"""

from __future__ import annotations

import base64
import binascii
import email.parser
import email.policy
import io
import json
import os
import time
from importlib import resources

import anyio
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse
from PIL import Image

from cnnlab.inference.predictor import Predictor
from cnnlab.data.pictures import MAX_BYTES, ImageError, ImageTooLarge

# A data URL or multipart body is larger than the image it carries (base64: 4/3); allow for that.
BODY_LIMIT = MAX_BYTES * 4 // 3 + 64 * 1024


class RequestError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def create_app(predictor: Predictor, workers: int | None = None) -> FastAPI:
    """The app around an already loaded model. `workers` caps concurrent predictions (default: CPU cores)."""
    limiter = anyio.CapacityLimiter(workers or os.cpu_count() or 1)
    page = resources.files("cnnlab.serve").joinpath("static/index.html").read_text(encoding="utf-8")
    app = FastAPI(title="cnnlab", docs_url=None, redoc_url=None, openapi_url=None)

    @app.exception_handler(RequestError)
    async def _request_error(request: Request, exc: RequestError) -> JSONResponse:
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    @app.get("/", response_class=HTMLResponse)
    async def index() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/api/health")
    async def health() -> dict:
        return {"status": "ok"}

    @app.get("/api/model")
    async def model_info() -> dict:
        return predictor.info

    @app.post("/api/predict")
    async def predict(request: Request) -> dict:
        image_bytes = await _image_from_request(request)
        t0 = time.perf_counter()
        try:
            pred = await anyio.to_thread.run_sync(predictor.predict, image_bytes, limiter=limiter)
        except ImageTooLarge as e:
            raise RequestError(413, str(e)) from None
        except ImageError as e:
            raise RequestError(422, str(e)) from None
        out = pred.as_dict()
        out["image"] = _png_data_url(pred.image)
        out["model"] = predictor.info["model"]
        out["milliseconds"] = round(1000 * (time.perf_counter() - t0), 2)
        return out

    return app


async def _read_capped(request: Request, limit: int = BODY_LIMIT) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise RequestError(400, "malformed Content-Length header")
        if int(declared) > limit:
            raise RequestError(413, f"the request body is over the {limit // 2**20} MB limit")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(413, f"the request body is over the {limit // 2**20} MB limit")
        chunks.append(chunk)
    return b"".join(chunks)


async def _image_from_request(request: Request) -> bytes:
    content_type = request.headers.get("content-type", "")
    kind = content_type.split(";", 1)[0].strip().lower()
    if kind not in ("multipart/form-data", "application/json") and not kind.startswith("image/"):
        raise RequestError(
            415, "send the image as multipart/form-data (field 'file'), as JSON {\"image\": data URL}, or as image/* bytes"
        )
    body = await _read_capped(request)
    if not body:
        raise RequestError(400, "the request body is empty")
    if kind.startswith("image/"):
        return body
    if kind == "application/json":
        return _from_json(body)
    return _from_multipart(content_type, body)


def _from_json(body: bytes) -> bytes:
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise RequestError(400, "the body is not valid JSON") from None
    url = doc.get("image") if isinstance(doc, dict) else None
    if not isinstance(url, str):
        raise RequestError(400, "the JSON body needs an 'image' field holding a data URL")
    header, sep, payload = url.partition(",")
    if not sep or not header.startswith("data:image/") or not header.endswith(";base64"):
        raise RequestError(400, "the 'image' field must be a data URL: data:image/<type>;base64,<data>")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(400, "the data URL's base64 payload is malformed") from None


def _from_multipart(content_type: str, body: bytes) -> bytes:
    if "boundary=" not in content_type:
        raise RequestError(400, "multipart/form-data without a boundary")
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode("latin-1", "replace")
    try:
        msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
        parts = list(msg.iter_parts()) if msg.is_multipart() else []
    except Exception:  # the stdlib parser is lenient, but a body can still be beyond it
        raise RequestError(400, "malformed multipart body") from None
    for part in parts:
        if part.get_param("name", header="content-disposition") == "file":
            data = part.get_payload(decode=True)
            if not data:
                raise RequestError(400, "the 'file' field is empty")
            return data
    raise RequestError(400, "the multipart body has no 'file' field")


def _png_data_url(image) -> str:
    buf = io.BytesIO()
    Image.fromarray(image if image.ndim == 2 else image.transpose(1, 2, 0)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
