"""What a request asks for, read defensively: the body within a size and time limit, JSON without recursion or
number surprises, the image in any of its three forms, and which model and parts it names.

Everything a client can get wrong ends here as a RequestError with a 4xx status and one line for the user; the
routes (app.py) never see a malformed input.
"""

from __future__ import annotations

import base64
import binascii
import email.parser
import email.policy
import json
import math
from dataclasses import dataclass, field
from typing import Any

import anyio
from starlette.requests import ClientDisconnect, Request

from cnnlab.data.pictures import MAX_BYTES

# A data URL or multipart body is larger than the image it carries (base64: 4/3); allow for that.
BODY_LIMIT = MAX_BYTES * 4 // 3 + 64 * 1024
SMALL_BODY_LIMIT = 64 * 1024  # bodies that carry no image (a training order)
BODY_SECONDS = 20.0  # the whole body must arrive within this: a client trickling bytes (slowloris) is cut off
MAX_SILENCE = 256  # part names in one request; every registered model has far fewer parts


class RequestError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


@dataclass
class Order:
    """An image request: the image's bytes, the model id (None: the default) and the parts to switch off."""

    image: bytes
    model: str | None = None
    silence: list[str] = field(default_factory=list)


async def read_body(request: Request, limit: int = BODY_LIMIT, seconds: float = BODY_SECONDS) -> bytes:
    """The request body, refused with 413 as soon as it passes `limit` (before it is held whole) and with 408 when
    it has not all arrived within `seconds`."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit() or len(declared) > 18:
            raise RequestError(400, "malformed Content-Length header")
        if int(declared) > limit:
            raise RequestError(413, f"the request body is over the {_size(limit)} limit")
    chunks, size = [], 0
    try:
        with anyio.fail_after(seconds):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise RequestError(413, f"the request body is over the {_size(limit)} limit")
                chunks.append(chunk)
    except TimeoutError:
        raise RequestError(408, f"the request body did not arrive within {seconds:g} s") from None
    except ClientDisconnect:
        raise RequestError(400, "the client went away before sending its whole body") from None
    return b"".join(chunks)


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MB" if n >= 2**20 else f"{n // 1024} kB"


def parse_json(body: bytes) -> Any:
    """A JSON document, or a 400 saying it is not one. Python's parser raises more than JSONDecodeError on hostile
    input: RecursionError for arrays nested 100,000 deep, ValueError for an integer of more than 4,300 digits."""
    try:
        return json.loads(body)
    except RecursionError:
        raise RequestError(400, "the JSON body is nested too deeply") from None
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError, and the integer-digits limit
        reason = "an integer has too many digits" if "digits" in str(e) else "not valid JSON"
        raise RequestError(400, f"the body is not valid JSON ({reason})") from None


def json_object(body: bytes) -> dict[str, Any]:
    doc = parse_json(body)
    if not isinstance(doc, dict):
        raise RequestError(400, f"the JSON body must be an object, not {_json_kind(doc)}")
    return doc


def _json_kind(value: Any) -> str:
    kinds = {dict: "an object", list: "an array", str: "a string", bool: "true or false", type(None): "null"}
    return kinds.get(type(value), "a number")


def text_field(doc: dict, name: str, required: bool = False, limit: int = 200) -> str | None:
    """doc[name] as a short string (None when absent and not required), else a 400 naming the field."""
    value = doc.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value or len(value) > limit:
        raise RequestError(400, f"the JSON field '{name}' must be a string of 1 to {limit} characters")
    return value


def number_field(doc: dict, name: str, low: float, high: float) -> float:
    """doc[name] as a finite number within [low, high], else a 422 (400 when it is not a number at all)."""
    value = doc.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RequestError(400, f"the JSON field '{name}' must be a number from {low:g} to {high:g}")
    if not (math.isfinite(value) and low <= value <= high):
        shown = f"{value:g}" if isinstance(value, float) else (str(value) if abs(value) < 10**12 else "a huge number")
        raise RequestError(422, f"'{name}' is {shown}; it must be from {low:g} to {high:g}")
    return float(value)


def _silence_list(value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and len(v) <= 200 for v in value):
        raise RequestError(400, "'silence' must be a list of part names (strings)")
    if len(value) > MAX_SILENCE:
        raise RequestError(400, f"'silence' names more than {MAX_SILENCE} parts")
    return value


async def read_order(request: Request) -> Order:
    """The image and the model and part choices of a /api/predict or /api/explain request: the model from the query
    (`?model=`) or the JSON body's "model", the parts from `?silence=` (repeated) or the JSON body's "silence"."""
    query_model = request.query_params.get("model")
    query_silence = request.query_params.getlist("silence")
    content_type = request.headers.get("content-type", "")
    kind = content_type.split(";", 1)[0].strip().lower()
    if kind not in ("multipart/form-data", "application/json") and not kind.startswith("image/"):
        raise RequestError(
            415, "send the image as multipart/form-data (field 'file'), as JSON {\"image\": data URL}, or as image/* bytes"
        )
    body = await read_body(request)
    if not body:
        raise RequestError(400, "the request body is empty")
    order = Order(b"", query_model or None, _silence_list(query_silence))
    if kind.startswith("image/"):
        order.image = body
    elif kind == "application/json":
        doc = json_object(body)
        order.image = _from_data_url(doc.get("image"))
        order.model = text_field(doc, "model") or order.model
        if doc.get("silence") is not None:
            order.silence = _silence_list(doc["silence"])
    else:
        order.image = _from_multipart(content_type, body)
    return order


def _from_data_url(url: Any) -> bytes:
    if not isinstance(url, str):
        raise RequestError(400, "the JSON body needs an 'image' field holding a data URL")
    header, sep, payload = url.partition(",")
    if not sep or not header.startswith("data:image/") or not header.endswith(";base64"):
        raise RequestError(400, "the 'image' field must be a data URL: data:image/<type>;base64,<data>")
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(400, "the data URL's base64 payload is malformed") from None
    if not data:
        raise RequestError(400, "the data URL holds no bytes")
    return data


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
