"""JSON responses rendered with orjson from plain data the services already shaped to the
documented response model, so a run is not validated a second time on its way out."""

from typing import Any

import orjson
from fastapi.responses import Response


class FastJSON(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_UTC_Z)
