"""JSON responses written with orjson, from plain data or the API's pydantic models.

FastAPI's own serialisation validates a response against its model a second time;
the routes build their answers from the models already, so they render them directly.
"""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import BaseModel
from starlette.responses import Response


class JsonResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        if isinstance(content, BaseModel):
            content = content.model_dump(mode="json", exclude_unset=True)
        return orjson.dumps(content)
