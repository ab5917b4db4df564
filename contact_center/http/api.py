"""Declarative JSON routes: one decorator gives the route, request validation, the role check
and the OpenAPI operation, all from the same pydantic models.

What a request carries is bounded here, once for every operation: the body's size (read with
the operation's limit, chunked bodies included), JSON's depth, NUL characters (PostgreSQL
refuses them in text), numbers JSON has no business carrying (``NaN``, ``1e400``) and every
integer of a validated body or query to the range of the database's ``INTEGER`` columns; ids
in the path to 1 … 2³¹−1 (anything else is a record that does not exist, 404).
"""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from pydantic import BaseModel

from contact_center import __version__
from crm_core.db import MAX_DB_INT, MIN_DB_INT
from crm_core.errors import InvalidInput, NotAuthenticated, NotFound, PermissionDenied, TooLarge
from crm_core.users.model import TokenKind, User

PREFIX = "/api/v1"
USER = web.RequestKey("user", User)  # set by the auth middleware
AUTH_KIND = web.RequestKey("auth_kind", TokenKind)  # how USER signed in (session or API token)
_ERROR_REF = {"$ref": "#/components/schemas/Error"}
Handler = Callable[..., Awaitable[Any]]

DEFAULT_MAX_BODY = 1024 * 1024
"""Bytes an operation's body may have unless it says otherwise (``max_body``)."""
PUBLIC_MAX_BODY = 16 * 1024
"""For the public endpoints a website's visitors reach (tracking, web forms)."""
MAX_JSON_DEPTH = 32
_INT64 = 2**63
ID_SCHEMA = {"type": "integer", "minimum": 1, "maximum": MAX_DB_INT}


CROSS_ORIGIN = web.RequestKey("cross_origin", str)
"""Set (to the Origin) by the auth middleware when a cookie came on another site's request:
the request goes on unauthenticated, and an operation that needs a user refuses it (403)."""


class CrossOriginRefused(PermissionDenied):
    error_id = "cross-origin-refused"


class BodyTooLarge(TooLarge):
    """A request body over the operation's limit (answered 413)."""

    error_id = "body-too-large"


def path_id(request: web.Request, name: str, what: str | None = None) -> int:
    """An integer id from the path; anything else (not a number, 0, past the id columns'
    range) is a missing record (404), never a 500."""
    raw = request.match_info[name]
    what = what or name.removesuffix("_id")
    if not (raw.isascii() and raw.isdigit() and 0 < len(raw) <= 10):
        raise NotFound(f"no {what} {raw[:32]!r}", details={name: raw[:32]})
    value = int(raw)
    if not 1 <= value <= MAX_DB_INT:
        raise NotFound(f"no {what} {value}", details={name: value})
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _encodable(text: str) -> bool:
    """Whether ``text`` is valid UTF-8 material (JSON's "\\ud800" decodes to a lone surrogate,
    which no database driver can send)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_values(data: Any, what: str = "body") -> None:
    """Refuse (422) what no field may hold: nesting deeper than :data:`MAX_JSON_DEPTH`, a NUL
    character in a string or key, a non-finite number, an integer past 64 bits."""
    stack: list[tuple[Any, str, int]] = [(data, what, 0)]
    while stack:
        value, where, depth = stack.pop()
        if isinstance(value, str):
            if "\x00" in value:
                raise InvalidInput(
                    f"{where}: contains a NUL character", details={"fields": {where: "NUL"}}
                )
            if not value.isascii() and not _encodable(value):
                raise InvalidInput(
                    f"{where}: not valid Unicode (a lone surrogate)",
                    details={"fields": {where: "not valid Unicode"}},
                )
        elif isinstance(value, bool) or value is None:
            continue
        elif isinstance(value, int):
            if not -_INT64 <= value < _INT64:
                raise InvalidInput(
                    f"{where}: number out of range", details={"fields": {where: "out of range"}}
                )
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise InvalidInput(
                    f"{where}: number out of range", details={"fields": {where: "out of range"}}
                )
        elif isinstance(value, dict | list):
            if depth >= MAX_JSON_DEPTH:
                raise InvalidInput(
                    f"{where}: nested deeper than {MAX_JSON_DEPTH} levels",
                    details={"max_depth": MAX_JSON_DEPTH},
                )
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for key, item in items:
                if isinstance(key, str) and "\x00" in key:
                    raise InvalidInput(
                        f"{where}: a key contains a NUL character",
                        details={"fields": {where: "NUL"}},
                    )
                stack.append((item, f"{where}.{key}" if where else str(key), depth + 1))


def check_db_ints(data: Any, what: str) -> None:
    """Refuse (422) an integer (of a validated model) the database's columns cannot hold."""
    stack: list[tuple[Any, str]] = [(data, what)]
    while stack:
        value, where = stack.pop()
        if isinstance(value, bool):
            continue
        if isinstance(value, int):
            if not MIN_DB_INT <= value <= MAX_DB_INT:
                raise InvalidInput(
                    f"{where}: must be between {MIN_DB_INT} and {MAX_DB_INT}",
                    details={"fields": {where: f"between {MIN_DB_INT} and {MAX_DB_INT}"}},
                )
        elif isinstance(value, dict):
            stack.extend((v, f"{where}.{k}") for k, v in value.items())
        elif isinstance(value, list | tuple | set | frozenset):
            stack.extend((v, f"{where}.{i}") for i, v in enumerate(value))


async def read_body(request: web.Request) -> bytes:
    """The body, read up to the request's limit (413 past it, chunked or not)."""
    limit = request.client_max_size
    if request.content_length is not None and limit and request.content_length > limit:
        raise BodyTooLarge(
            f"request body larger than {limit} bytes", details={"limit_bytes": limit}
        )
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise BodyTooLarge(
            f"request body larger than {limit} bytes", details={"limit_bytes": limit}
        ) from None


async def read_json(request: web.Request) -> Any:
    """The JSON body, bounded and checked (:func:`check_values`); 4xx for anything else."""
    raw = await read_body(request)
    try:
        data = json.loads(raw, parse_constant=_no_constant)
    except RecursionError:
        raise InvalidInput(
            f"request body is nested deeper than {MAX_JSON_DEPTH} levels",
            details={"max_depth": MAX_JSON_DEPTH},
        ) from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, a 5,000-digit integer
        raise InvalidInput(f"request body is not valid JSON: {str(exc)[:200]}") from None
    check_values(data)
    return data


@dataclass
class Operation:
    method: str
    path: str
    handler: Handler
    summary: str
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    status: int = 200
    roles: frozenset[str] | None = None
    public: bool = False
    tags: tuple[str, ...] = ()
    errors: dict[int, str] = field(default_factory=dict)
    max_body: int = DEFAULT_MAX_BODY
    path_params: dict[str, dict[str, Any]] = field(default_factory=dict)

    def path_schema(self, name: str) -> dict[str, Any]:
        """A path parameter's schema: as declared, else an id for ``id``/``*_id``."""
        if name in self.path_params:
            return self.path_params[name]
        if name == "id" or name.endswith("_id"):
            return dict(ID_SCHEMA)
        return {"type": "string"}


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, default=str)


class Api:
    """A set of operations under ``/api/v1``."""

    def __init__(self) -> None:
        self.operations: list[Operation] = []

    def route(
        self,
        method: str,
        path: str,
        *,
        summary: str,
        body: type[BaseModel] | None = None,
        query: type[BaseModel] | None = None,
        response: type[BaseModel] | None = None,
        status: int = 200,
        roles: Iterable[str] | None = None,
        public: bool = False,
        tags: Iterable[str] = (),
        errors: dict[int, str] | None = None,
        max_body: int = DEFAULT_MAX_BODY,
        path_params: dict[str, dict[str, Any]] | None = None,
    ) -> Callable[[Handler], Handler]:
        """Register ``handler(request, body?, query?)``; it returns a model, a dict/list or a
        ``web.StreamResponse``. ``max_body`` bounds the body (bytes) the handler can read;
        ``path_params`` gives a path parameter's schema when it is not an id (``id``,
        ``*_id``: an integer 1 … 2³¹−1)."""

        def decorate(handler: Handler) -> Handler:
            self.operations.append(
                Operation(
                    method=method.upper(),
                    path=path,
                    handler=handler,
                    summary=summary,
                    body=body,
                    query=query,
                    response=response,
                    status=status,
                    roles=frozenset(roles) if roles is not None else None,
                    public=public,
                    tags=tuple(tags),
                    errors=dict(errors or {}),
                    max_body=max_body,
                    path_params=dict(path_params or {}),
                )
            )
            return handler

        return decorate

    def install(self, app: web.Application) -> None:
        for op in self.operations:
            app.router.add_route(op.method, PREFIX + op.path, self._wrap(op))

    @staticmethod
    def _wrap(op: Operation) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        ids = [
            name for name in _path_params(op.path) if op.path_schema(name).get("type") == "integer"
        ]

        async def handle(request: web.Request) -> web.StreamResponse:
            user = request.get(USER)
            if not op.public:
                if user is None and CROSS_ORIGIN in request:
                    raise CrossOriginRefused(
                        f"cross-origin request refused (from {request[CROSS_ORIGIN]!r})",
                        details={"origin": request[CROSS_ORIGIN]},
                    )
                if user is None:
                    raise NotAuthenticated("authentication required")
                if op.roles is not None and user.role not in op.roles:
                    raise PermissionDenied(
                        f"role {user.role!r} may not {op.method} {op.path}",
                        details={"required_roles": sorted(op.roles)},
                    )
            for name in ids:
                path_id(request, name)
            check_values(dict(request.match_info), "path")
            if request.client_max_size != op.max_body and request.can_read_body:
                # The operation's own limit, enforced while the body is read. A clone forgets
                # what an earlier clone (the trusted-proxy middleware) set unless told again.
                clone = request.clone(
                    client_max_size=op.max_body,
                    remote=request.remote or "",
                    scheme=request.scheme,
                    host=request.host,
                )
                try:
                    return await _run(op, clone)
                finally:
                    # The response is prepared with the original request: what the handler
                    # noted (CORS decisions) must be on it.
                    for key, value in clone.items():
                        request[key] = value
            return await _run(op, request)

        handle.__name__ = op.handler.__name__
        return handle

    def openapi(self, title: str = "contact-center") -> dict[str, Any]:
        """The OpenAPI 3.1 document for every registered operation."""
        schemas: dict[str, Any] = {}

        def ref(model: type[BaseModel]) -> dict[str, Any]:
            schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
            for name, sub in schema.pop("$defs", {}).items():
                schemas[name] = sub
            schemas[model.__name__] = schema
            return {"$ref": f"#/components/schemas/{model.__name__}"}

        paths: dict[str, dict[str, Any]] = {}
        for op in self.operations:
            doc: dict[str, Any] = {
                "summary": op.summary,
                "operationId": op.handler.__name__,
                "tags": list(op.tags),
                "responses": {},
            }
            if not op.public:
                doc["security"] = [{"bearer": []}, {"cookie": []}]
            params = [
                {"name": p, "in": "path", "required": True, "schema": op.path_schema(p)}
                for p in _path_params(op.path)
            ]
            if op.query is not None:
                qschema = op.query.model_json_schema(ref_template="#/components/schemas/{model}")
                schemas.update(qschema.pop("$defs", {}))
                required = set(qschema.get("required", []))
                for name, prop in qschema.get("properties", {}).items():
                    params.append(
                        {"name": name, "in": "query", "required": name in required, "schema": prop}
                    )
            if params:
                doc["parameters"] = params
            if op.body is not None:
                doc["requestBody"] = {
                    "required": True,
                    "content": {"application/json": {"schema": ref(op.body)}},
                }
            ok: dict[str, Any] = {"description": "OK"}
            if op.response is not None:
                ok["content"] = {"application/json": {"schema": ref(op.response)}}
            doc["responses"][str(op.status)] = ok
            for code, text in {
                **({} if op.public else {401: "Not authenticated"}),
                **({403: "Role not allowed"} if op.roles is not None else {}),
                **({422: "Validation failed"} if op.body or op.query or _typed(op) else {}),
                **({404: "No such record"} if _path_params(op.path) else {}),
                **({413: "Request body too large"} if op.body else {}),
                **op.errors,
            }.items():
                doc["responses"][str(code)] = {
                    "description": text,
                    "content": {"application/json": {"schema": _ERROR_REF}},
                }
            paths.setdefault(PREFIX + op.path, {})[op.method.lower()] = doc
        schemas["Error"] = {
            "type": "object",
            "required": ["error", "message", "details"],
            "properties": {
                "error": {"type": "string", "description": "stable error id"},
                "message": {"type": "string"},
                "details": {"type": "object"},
            },
        }
        _bound_integers(schemas)
        _bound_integers(paths)
        return {
            "openapi": "3.1.0",
            "info": {"title": title, "version": __version__},
            "paths": paths,
            "components": {
                "schemas": schemas,
                "securitySchemes": {
                    "bearer": {"type": "http", "scheme": "bearer"},
                    "cookie": {"type": "apiKey", "in": "cookie", "name": "cc_session"},
                },
            },
        }


async def _run(op: Operation, request: web.Request) -> web.StreamResponse:
    args: list[Any] = []
    if op.body is not None:
        body = op.body.model_validate(await read_json(request))
        check_db_ints(body.model_dump(), "body")
        args.append(body)
    if op.query is not None:
        raw_query = dict(request.query)
        check_values(raw_query, "")
        query = op.query.model_validate(raw_query)
        check_db_ints(query.model_dump(), "query")
        args.append(query)
    result = await op.handler(request, *args)
    if isinstance(result, web.StreamResponse):
        return result
    if isinstance(result, BaseModel):
        result = result.model_dump(mode="json")
    if result is None and op.status == 204:
        return web.Response(status=204)
    return web.json_response(result, status=op.status, dumps=_dumps)


def _bound_integers(schema: Any) -> None:
    """Give every integer of a schema the range the handlers enforce (:func:`check_db_ints`),
    so the document says what the server accepts."""
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if node.get("type") == "integer":
                node.setdefault("minimum", MIN_DB_INT)
                node.setdefault("maximum", MAX_DB_INT)
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def _typed(op: Operation) -> bool:
    """Whether a path parameter other than an id is parsed (a date, a key): 422 if it is not
    one."""
    return any(
        op.path_schema(p).get("type") != "integer" and p in op.path_params
        for p in _path_params(op.path)
    )


def _path_params(path: str) -> list[str]:
    out = []
    for part in path.split("/"):
        if part.startswith("{") and part.endswith("}"):
            out.append(part[1:-1].split(":")[0])
    return out
