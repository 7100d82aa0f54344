"""What a request asks for, read defensively: who asks (the Host it names, the origin it comes from), the body
within a size and time limit, JSON without recursion or number surprises, the image in any of its three forms, and
which model and parts it names.

Everything a client can get wrong ends here as a RequestError with a 4xx status, one line for the user, and a
code from ERROR_CODES with its parameters, which the page shows in its reader's language; the routes (app.py)
never see a malformed input.
"""

from __future__ import annotations

import base64
import binascii
import email.parser
import email.policy
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import anyio
from starlette.requests import ClientDisconnect, Request

from cnnlab.data.tensors.pictures import MAX_BYTES, ImageError
from cnnlab.models.designed import DesignError
from cnnlab.serve.server import split_host

# A data URL or multipart body is larger than the image it carries (base64: 4/3); allow for that.
BODY_LIMIT = MAX_BYTES * 4 // 3 + 64 * 1024
SMALL_BODY_LIMIT = 64 * 1024  # bodies that carry no image (a training order)
BODY_SECONDS = 20.0  # the whole body must arrive within this: a client trickling bytes (slowloris) is cut off
MAX_SILENCE = 256  # part names in one request; every registered model has far fewer parts


# Every error the server sends the page: a stable code (the page's text for it is i18n.js's "error.<code>", in each
# language) and the names of the parameters that come with it. The English line ("error") stays beside it for the
# command line and the API's users. A new error is declared here first: RequestError refuses an undeclared code,
# and tests/serve/test_errors_zh.py holds the page to a text for every code in both languages.
ERROR_CODES: dict[str, tuple[str, ...]] = {
    # who asks
    "host.count": (),
    "host.malformed": (),
    "host.refused": ("name",),
    "origin.site": ("site",),
    "origin.other": ("origin",),
    # the body and its JSON
    "body.length": (),
    "body.too_large": ("limit",),
    "body.slow": ("seconds",),
    "body.cut": (),
    "body.empty": (),
    "json.type": (),
    "json.deep": (),
    "json.digits": (),
    "json.invalid": (),
    "json.object": (),
    "field.text": ("field", "limit"),
    "field.number": ("field", "low", "high"),
    "field.range": ("field", "value", "low", "high"),
    "silence.list": (),
    "silence.many": ("limit",),
    # the image, as it is sent
    "image.type": (),
    "image.no_url": (),
    "image.url": (),
    "image.base64": (),
    "image.url_empty": (),
    "multipart.boundary": (),
    "multipart.malformed": (),
    "multipart.empty": (),
    "multipart.no_file": (),
    # the image, as the picture reader finds it (picture_error)
    "image.empty": (),
    "image.bytes": ("limit",),
    "image.side": ("size", "limit"),
    "image.pixels": ("size", "limit"),
    "image.no_pixels": ("size",),
    "image.unreadable": (),
    "image.undecodable": ("reason",),
    "image.not_finite": (),
    "image.no_ink": (),
    "image.no_item": (),
    "image.invalid": ("reason",),  # a picture error without a code of its own: its English reason
    "image.unprepared": ("reason",),
    # the models and their parts
    "model.none": (),
    "model.unknown": ("model", "valid"),
    "part.unknown": ("parts", "valid"),
    "part.no_parts": ("parts",),
    "scale.unknown": ("scale", "valid"),
    "value.missing": ("reason",),  # a stage or position the picture's forward does not have (/api/value)
    # training from the page: the orders (answers), then what the training process did (`error` events)
    "training.off": (),
    "training.model": ("model", "valid"),
    "training.dataset": ("dataset", "valid"),
    "training.busy": ("model", "elapsed", "budget"),
    "training.idle": (),
    "training.no_start": ("reason",),
    "training.failed": ("reason",),  # the training process's own one line (a data set that cannot be fetched...)
    "training.exit": ("code",),
    "training.exit_said": ("code", "reason"),
    "training.killed": ("signal",),
    "training.unservable": ("reason",),
    # a block design the page's designer or a training order names (models/designed.DesignError says which)
    **DesignError.CODES,
    "design.not_taken": ("model",),  # a design for a model that takes none
    "design.family": ("model", "default"),  # a depth and width a family's model cannot take
    # the page's files, and routes that do not exist
    "page.missing": ("name",),
    "http.status": ("status",),
}


def coded(code: str, /, **params: Any) -> dict[str, Any]:
    """{"code", "params"} of an error the page is sent, once the code is found declared with exactly these
    parameters (ValueError: a mistake in this program, not the client's)."""
    if code not in ERROR_CODES:
        raise ValueError(f"error code {code!r} is not declared in ERROR_CODES")
    if set(params) != set(ERROR_CODES[code]):
        raise ValueError(f"error code {code!r} takes the parameters {ERROR_CODES[code]}, not {tuple(params)}")
    return {"code": code, "params": params}


class RequestError(Exception):
    """A request refused: its HTTP status, one English line, and its code and parameters (ERROR_CODES)."""

    def __init__(self, status: int, message: str, code: str, /, **params: Any) -> None:
        super().__init__(message)
        self.status, self.message, self.coded = status, message, coded(code, **params)

    @property
    def code(self) -> str:
        return self.coded["code"]

    def answer(self) -> dict[str, Any]:
        """The JSON answer: {"error": the English line, "code", "params"}."""
        return {"error": self.message, **self.coded}


# ---- who asks ------------------------------------------------------------------------------------------------

READING_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})  # any other method may change something: its origin is checked
DEFAULT_PORTS = {"http": 80, "https": 443}


def check_host(values: list[str], names: frozenset[str]) -> None:
    """Refuse a request whose Host header gives none of `names` (403). A page of another site that made its own
    name point at this machine (DNS rebinding) reaches it as a page of that name, so its requests say that name;
    the port is not checked, since the name is what rebinding changes."""
    if len(values) != 1:
        raise RequestError(400, "the request needs exactly one Host header", "host.count")
    split = split_host(values[0])
    if split is None:
        raise RequestError(400, "malformed Host header", "host.malformed")
    if split[0] not in names:
        raise RequestError(403, f"this server does not answer to the name {_shown(split[0])} "
                                "(its owner can add one with cnnlab serve --allow-host NAME)",
                           "host.refused", name=_shown(split[0]))


def check_same_origin(scheme: str, host: str, origin: str | None, fetch_site: str | None) -> None:
    """Refuse (403) a request that a browser says comes from a page of another origin: Sec-Fetch-Site, when sent,
    must be same-origin or none (typed or bookmarked), and Origin, when sent, must be this request's own
    scheme://host[:port]. A request with neither (curl, a script on the machine) comes from no page at all."""
    if fetch_site is not None and fetch_site.strip().lower() not in ("same-origin", "none"):
        raise RequestError(403, f"a request from another site (Sec-Fetch-Site: {_shown(fetch_site)}) "
                                "may not change anything here", "origin.site", site=_shown(fetch_site))
    if origin is None:
        return
    own = split_host(host)
    if own is None or _origin(origin) != (scheme, own[0], own[1] or DEFAULT_PORTS.get(scheme)):
        raise RequestError(403, f"a request from another origin ({_shown(origin)}) may not change anything here",
                           "origin.other", origin=_shown(origin))


def _origin(origin: str) -> tuple[str, str | None, int | None] | None:
    """An Origin header as (scheme, host, port with the scheme's default); None for "null" or a malformed one."""
    try:
        parts = urlsplit(origin.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").rstrip(".")
    if not host or parts.path or parts.query or parts.username is not None:
        return None
    return scheme, host, port or DEFAULT_PORTS.get(scheme)


def _shown(text: str, limit: int = 80) -> str:
    """A client's own words in an answer: quoted, and short."""
    return repr(text if len(text) <= limit else text[:limit] + "...")


# ---- what it asks -------------------------------------------------------------------------------------------

@dataclass
class Order:
    """An image request: the image's bytes, the model id (None: the default) and the parts to switch off."""

    image: bytes
    model: str | None = None
    silence: list[str] = field(default_factory=list)
    fields: dict[str, Any] = field(default_factory=dict)  # the rest: the JSON body's other fields, else the query's


async def read_body(request: Request, limit: int = BODY_LIMIT, seconds: float = BODY_SECONDS) -> bytes:
    """The request body, refused with 413 as soon as it passes `limit` (before it is held whole) and with 408 when
    it has not all arrived within `seconds`."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit() or len(declared) > 18:
            raise RequestError(400, "malformed Content-Length header", "body.length")
        if int(declared) > limit:
            raise RequestError(413, f"the request body is over the {_size(limit)} limit", "body.too_large",
                               limit=_size(limit))
    chunks, size = [], 0
    try:
        with anyio.fail_after(seconds):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise RequestError(413, f"the request body is over the {_size(limit)} limit", "body.too_large",
                                       limit=_size(limit))
                chunks.append(chunk)
    except TimeoutError:
        raise RequestError(408, f"the request body did not arrive within {seconds:g} s", "body.slow",
                           seconds=f"{seconds:g}") from None
    except ClientDisconnect:
        raise RequestError(400, "the client went away before sending its whole body", "body.cut") from None
    return b"".join(chunks)


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MB" if n >= 2**20 else f"{n // 1024} kB"


def parse_json(body: bytes) -> Any:
    """A JSON document, or a 400 saying it is not one. Python's parser raises more than JSONDecodeError on hostile
    input: RecursionError for arrays nested 100,000 deep, ValueError for an integer of more than 4,300 digits."""
    try:
        return json.loads(body)
    except RecursionError:
        raise RequestError(400, "the JSON body is nested too deeply", "json.deep") from None
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError, and the integer-digits limit
        if "digits" in str(e):
            raise RequestError(400, "the body is not valid JSON (an integer has too many digits)", "json.digits") from None
        raise RequestError(400, "the body is not valid JSON (not valid JSON)", "json.invalid") from None


async def json_order(request: Request, empty_allowed: bool = False) -> dict[str, Any]:
    """The JSON object of a request that changes something (a training's start or stop), read only when its
    Content-Type is application/json (else 415). A page of another origin can send text/plain or a form here
    without asking, but JSON only after a CORS preflight, which this server never grants. With `empty_allowed`,
    no body at all is the empty object."""
    kind = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if kind != "application/json":
        raise RequestError(415, "send the order as JSON, with the header Content-Type: application/json", "json.type")
    body = await read_body(request, SMALL_BODY_LIMIT)
    if not body and empty_allowed:
        return {}
    return json_object(body)


def json_object(body: bytes) -> dict[str, Any]:
    doc = parse_json(body)
    if not isinstance(doc, dict):
        raise RequestError(400, f"the JSON body must be an object, not {_json_kind(doc)}", "json.object")
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
        raise RequestError(400, f"the JSON field '{name}' must be a string of 1 to {limit} characters", "field.text",
                           field=name, limit=limit)
    return value


def number_field(doc: dict, name: str, low: float, high: float) -> float:
    """doc[name] as a finite number within [low, high], else a 422 (400 when it is not a number at all).

    JSON integers have no size limit but the parser's digit count: one of 300 digits is beyond a float, so
    math.isfinite and float() would raise OverflowError on it. Python compares an int with a float exactly,
    so the range is checked first, and only a number within it becomes a float."""
    value = doc.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RequestError(400, f"the JSON field '{name}' must be a number from {low:g} to {high:g}", "field.number",
                           field=name, low=f"{low:g}", high=f"{high:g}")
    finite = isinstance(value, int) or math.isfinite(value)
    if not (finite and low <= value <= high):
        shown = f"{value:g}" if isinstance(value, float) else (str(value) if abs(value) < 10**12 else "a huge number")
        raise RequestError(422, f"'{name}' is {shown}; it must be from {low:g} to {high:g}", "field.range",
                           field=name, value=shown, low=f"{low:g}", high=f"{high:g}")
    return float(value)


def _silence_list(value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and len(v) <= 200 for v in value):
        raise RequestError(400, "'silence' must be a list of part names (strings)", "silence.list")
    if len(value) > MAX_SILENCE:
        raise RequestError(400, f"'silence' names more than {MAX_SILENCE} parts", "silence.many", limit=MAX_SILENCE)
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
            415, "send the image as multipart/form-data (field 'file'), as JSON {\"image\": data URL}, or as image/* bytes",
            "image.type")
    body = await read_body(request)
    if not body:
        raise RequestError(400, "the request body is empty", "body.empty")
    order = Order(b"", query_model or None, _silence_list(query_silence),
                  {k: v for k, v in request.query_params.items() if k not in ("model", "silence")})
    if kind.startswith("image/"):
        order.image = body
    elif kind == "application/json":
        doc = json_object(body)
        order.image = _from_data_url(doc.get("image"))
        order.model = text_field(doc, "model") or order.model
        if doc.get("silence") is not None:
            order.silence = _silence_list(doc["silence"])
        order.fields.update({k: v for k, v in doc.items() if k not in ("image", "model", "silence")})
    else:
        order.image = _from_multipart(content_type, body)
    return order


def _from_data_url(url: Any) -> bytes:
    if not isinstance(url, str):
        raise RequestError(400, "the JSON body needs an 'image' field holding a data URL", "image.no_url")
    header, sep, payload = url.partition(",")
    if not sep or not header.startswith("data:image/") or not header.endswith(";base64"):
        raise RequestError(400, "the 'image' field must be a data URL: data:image/<type>;base64,<data>", "image.url")
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(400, "the data URL's base64 payload is malformed", "image.base64") from None
    if not data:
        raise RequestError(400, "the data URL holds no bytes", "image.url_empty")
    return data


def _from_multipart(content_type: str, body: bytes) -> bytes:
    if "boundary=" not in content_type:
        raise RequestError(400, "multipart/form-data without a boundary", "multipart.boundary")
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode("latin-1", "replace")
    try:
        msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
        parts = list(msg.iter_parts()) if msg.is_multipart() else []
    except Exception:  # the stdlib parser is lenient, but a body can still be beyond it
        raise RequestError(400, "malformed multipart body", "multipart.malformed") from None
    for part in parts:
        if part.get_param("name", header="content-disposition") == "file":
            data = part.get_payload(decode=True)
            if not data:
                raise RequestError(400, "the 'file' field is empty", "multipart.empty")
            return data
    raise RequestError(400, "the multipart body has no 'file' field", "multipart.no_file")


# ---- what the picture reader found ---------------------------------------------------------------------------

# The picture reader (cnnlab.data.tensors.pictures) says what is wrong in an English line and its class; each line
# it writes is matched whole here to a code, with the parts the page shows as parameters. A line matched by none
# (one added there since) still reaches the page, as "image.invalid" with the line as its reason:
# tests/serve/test_errors_zh.py makes the reader write each of these it can be made to write, and checks the match.
_PICTURE_LINES = [
    (re.compile(r"the file is empty"), "image.empty"),
    (re.compile(r"(?:[\d,]+ bytes is|the file is) over the (?P<limit>\d+ MB) limit"), "image.bytes"),
    (re.compile(r"the image is (?P<size>\d+x\d+); at most (?P<limit>\d+) px a side"), "image.side"),
    (re.compile(r"the image is (?P<size>\d+x\d+) \S+, \d+ MB once decoded; the limit is (?P<limit>\d+ MB) .*"),
     "image.pixels"),
    (re.compile(r"the image has no pixels \((?P<size>\d+x\d+)\)"), "image.no_pixels"),
    (re.compile(r"not an image file Pillow can read"), "image.unreadable"),
    (re.compile(r"the image could not be decoded \((?P<reason>.*)\)"), "image.undecodable"),
    (re.compile(r"the image has pixels that are not numbers .*"), "image.not_finite"),
    (re.compile(r"the image holds no ink: .*"), "image.no_ink"),
    (re.compile(r"the image holds no item: .*"), "image.no_item"),
]


def picture_error(e: ImageError, status: int) -> RequestError:
    """The RequestError (with `status`) of what the picture reader raised: its line as it is, and its code."""
    message = str(e)
    for line, code in _PICTURE_LINES:
        if m := line.fullmatch(message):
            return RequestError(status, message, code, **m.groupdict())
    return RequestError(status, message, "image.invalid", reason=message)
