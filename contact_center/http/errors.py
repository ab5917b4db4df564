"""One place where domain and validation errors become JSON HTTP responses."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from aiohttp import web
from pydantic import ValidationError
from redis.exceptions import RedisError
from sqlalchemy.exc import DBAPIError

from contact_center import db
from contact_center.i18n import pick_language, translator
from crm_core import errors

log = logging.getLogger(__name__)

STATUS: list[tuple[type[errors.DomainError], int]] = [
    (errors.TooLarge, 413),
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


class LogLimiter:
    """At most one log record per kind of failure per ``window_s``: a client repeating a
    request that fails must not fill the disk with the same traceback. The first of a kind is
    logged with its traceback; the repeats are counted and the count is logged with the next
    one let through."""

    def __init__(self, window_s: float = 60.0, max_kinds: int = 1000) -> None:
        self.window_s = window_s
        self.max_kinds = max_kinds
        self._last: dict[tuple[str, ...], tuple[float, int]] = {}

    def allow(self, kind: tuple[str, ...], now: float | None = None) -> tuple[bool, int]:
        """(log it?, repeats suppressed since the last record of this kind)."""
        now = time.monotonic() if now is None else now
        last = self._last.get(kind)
        if last is not None and now - last[0] < self.window_s:
            self._last[kind] = (last[0], last[1] + 1)
            return False, 0
        if last is None and len(self._last) >= self.max_kinds:
            self._last = {k: v for k, v in self._last.items() if now - v[0] < self.window_s}
            if len(self._last) >= self.max_kinds:
                return False, 0
        self._last[kind] = (now, 0)
        return True, last[1] if last is not None else 0


_LOG_LIMIT = LogLimiter()


def _kind(exc: BaseException) -> tuple[str, ...]:
    """What makes two failures "the same": the exception type and where it was raised."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    where = f"{tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}" if tb is not None else "?"
    return (type(exc).__name__, where)


def log_failure(
    request: web.Request, exc: BaseException, what: str, *, expected: bool = False
) -> None:
    """Log a failure of ``request`` (rate-limited per kind). ``expected``: a service away,
    which the operator sees on /healthz: one warning line, no traceback."""
    allowed, repeats = _LOG_LIMIT.allow(_kind(exc))
    if not allowed:
        return
    more = f" ({repeats} more like it since the last report)" if repeats else ""
    if expected:
        log.warning(
            "%s on %s %s: %s%s",
            what,
            request.method,
            request.path,
            db.describe_error(exc),
            more,
        )
        return
    log.error(
        "%s on %s %s: %s: %s%s",
        what,
        request.method,
        request.path,
        type(exc).__name__,
        str(exc)[:300],
        more,
        exc_info=exc if not repeats else None,
    )


def _refused_by_database(exc: DBAPIError) -> bool:
    """A value the database refuses (an integer past its column, a NUL in text): the input's
    fault, should it slip past validation."""
    orig = getattr(exc, "orig", None)
    name = type(orig).__name__ if orig is not None else ""
    text = str(orig or exc)
    return (
        name in ("DataError", "CharacterNotInRepertoireError", "NumericValueOutOfRangeError")
        or "out of int32 range" in text
        or "out of int64 range" in text
        or "too large to convert" in text
    )


@web.middleware
async def error_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        response: web.StreamResponse = await handler(request)
        return response
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
        if exc.status == 413:
            return error_response(413, "body-too-large", "request body too large")
        return error_response(exc.status, f"http-{exc.status}", exc.reason)
    except RedisError as exc:
        log_failure(request, exc, "redis unavailable", expected=True)
        return _unavailable(request, "redis-unavailable")
    except (DBAPIError, OverflowError) as exc:
        if isinstance(exc, OverflowError) or _refused_by_database(exc):
            log_failure(request, exc, "value refused by the database")
            return error_response(
                422,
                "invalid-input",
                "a value is out of range or holds a character that cannot be stored",
            )
        if db.unavailable(exc):
            log_failure(request, exc, "database unavailable", expected=True)
            return _unavailable(request, "database-unavailable")
        log_failure(request, exc, "database error")
        return _internal_error(request)
    except Exception as exc:
        if db.unavailable(exc):  # a refused connection arrives as a bare OSError
            log_failure(request, exc, "database unavailable", expected=True)
            return _unavailable(request, "database-unavailable")
        log_failure(request, exc, "unexpected error")
        return _internal_error(request)


# Seconds a client is asked to wait before trying again while a service is away.
RETRY_AFTER_S = 2


def _unavailable(request: web.Request, error_id: str) -> web.Response:
    """503 in the stable shape, in the caller's language: nothing was stored, try again."""
    from contact_center.keys import SETTINGS  # keys imports the HTTP layer

    default = request.app[SETTINGS].locale.default if SETTINGS in request.app else "ru"
    lang = pick_language(request, default)
    message = translator(lang)("error." + error_id)
    if request.path.startswith("/api/"):
        response = error_response(503, error_id, message)
    else:  # a page: a person reads it
        response = web.Response(status=503, text=message)
    response.headers["Retry-After"] = str(RETRY_AFTER_S)
    return response


def _internal_error(request: web.Request) -> web.Response:
    if request.path.startswith("/api/"):
        return error_response(500, "internal-error", "internal error; it has been logged")
    return web.Response(status=500, text="Внутренняя ошибка сервера. Она записана в журнал.")
