"""The error answers the OpenAPI document declares, all with the body the handlers in
``app.main`` give every error (``ErrorOut``), described once."""

from typing import Any

from app.schemas import ErrorOut

DESCRIPTIONS = {
    401: "Auth is required and no valid token was sent (a project's, as Bearer).",
    403: "The token's project may not act for the project named.",
    404: "No such row in the token's project.",
    409: "The request conflicts with the row's state.",
    413: "The request body is larger than ADVISOR_MAX_BODY_BYTES.",
    422: "A parameter or the body is invalid; the message names the field.",
    500: "Unexpected error; the server log has it under the request id.",
    503: "The database is unavailable or busy; retry after Retry-After seconds.",
    507: "The database or its disk is full.",
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` of an operation that may answer these error codes."""
    return {code: {"model": ErrorOut, "description": DESCRIPTIONS[code]} for code in codes}


# What an operation on the API's data may answer: those of its project's token, of its
# parameters and body, of the rows it names, and of the storage.
API_ERRORS = errors(401, 403, 404, 409, 413, 422, 500, 503, 507)
