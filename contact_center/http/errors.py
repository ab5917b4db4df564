"""One place where domain and validation errors become JSON HTTP responses."""

from __future__ import annotations

import json
import logging
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from crm_core import errors

log = logging.getLogger(__name__)

STATUS: list[tuple[type[errors.DomainError], int]] = [
    (errors.NotFound, 404),
    (errors.Conflict, 409),
    (errors.InvalidInput, 422),
    (errors.NotAuthenticated, 401),
    (errors.PermissionDenied, 403),
    (errors.RateLimited, 429),
    (errors.Unavailable, 503),
    (errors.DomainError, 400),
]


def error_response(
    status: int, error_id: str, message: str, details: dict[str, Any] | None = None
) -> web.Response:
    body = {"error": error_id, "message": message, "details": details or {}}
    return web.json_response(body, status=status, dumps=lambda o: json.dumps(o, ensure_ascii=False))


def validation_details(exc: ValidationError) -> dict[str, Any]:
    """``{"fields": {"a.b": "message"}}`` from a pydantic error."""
    fields: dict[str, str] = {}
    for err in exc.errors(include_url=False):
        key = ".".join(str(p) for p in err["loc"]) or "body"
        fields.setdefault(key, err["msg"])
    return {"fields": fields}


@web.middleware
async def error_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        return await handler(request)
    except errors.DomainError as exc:
        status = next(code for cls, code in STATUS if isinstance(exc, cls))
        return error_response(status, exc.error_id, exc.message, exc.details)
    except ValidationError as exc:
        details = validation_details(exc)
        names = ", ".join(details["fields"])
        return error_response(422, "validation-failed", f"invalid fields: {names}", details)
    except web.HTTPException as exc:
        if not request.path.startswith("/api/") or exc.status < 400:
            raise
        return error_response(exc.status, f"http-{exc.status}", exc.reason)
