"""JSON in and out with orjson.

Responses are rendered from plain data the services already shaped to the documented response
model, so a run is not validated a second time on its way out. Request bodies are parsed by
orjson through FastAPI's documented custom-route hook; bodies with NaN/Infinity literals (not
JSON, but what Python's encoder writes) fall back to the standard parser so that validation can
name the offending field instead of failing on a decode position. So do bodies that may hold an
integer orjson would turn into a float (beyond 64 bits, which it does without a word): the
standard parser keeps it an integer, which validation then refuses by name.
"""

import json
import re
from collections.abc import Callable, Coroutine
from typing import Any

import orjson
from fastapi import Request
from fastapi.responses import Response
from fastapi.routing import APIRoute


class FastJSON(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_UTC_Z)


# 19 digits in a row, not after a decimal point: an integer literal that may lie beyond int64,
# where orjson reads floats. Rare in reports (floats have at most 17 significant digits; a
# fraction's digits follow the point), and a false alarm only costs the slower parser.
LONG_DIGITS = re.compile(rb"(?<![\d.])\d{19}")


def parse(body: bytes) -> Any:
    if not LONG_DIGITS.search(body):
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            pass  # perhaps NaN/Infinity, which the standard parser reads for validation to name
    try:
        return json.loads(body)
    except UnicodeDecodeError as exc:
        # FastAPI answers any failure but a JSONDecodeError with a bare 400; as one, these
        # answer 422 naming the body, as every other body that is not JSON does.
        raise json.JSONDecodeError(
            f"not UTF-8: {exc.reason}", body.decode("utf-8", "replace"), exc.start
        ) from exc
    except RecursionError as exc:
        raise json.JSONDecodeError("nested too deeply", body.decode("utf-8", "replace"), 0) from exc


class OrjsonRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = parse(await self.body())
        return self._json


class OrjsonRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            return await handler(OrjsonRequest(request.scope, request.receive))

        return handle
