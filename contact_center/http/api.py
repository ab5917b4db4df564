"""Declarative JSON routes: one decorator gives the route, request validation, the role check
and the OpenAPI operation, all from the same pydantic models."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from pydantic import BaseModel

from contact_center import __version__
from crm_core.errors import InvalidInput, NotAuthenticated, PermissionDenied
from crm_core.users.model import TokenKind, User

PREFIX = "/api/v1"
USER = web.RequestKey("user", User)  # set by the auth middleware
AUTH_KIND = web.RequestKey("auth_kind", TokenKind)  # how USER signed in (session or API token)
_ERROR_REF = {"$ref": "#/components/schemas/Error"}
Handler = Callable[..., Awaitable[Any]]


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
    ) -> Callable[[Handler], Handler]:
        """Register ``handler(request, body?, query?)``; it returns a model, a dict/list or a
        ``web.StreamResponse``."""

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
                )
            )
            return handler

        return decorate

    def install(self, app: web.Application) -> None:
        for op in self.operations:
            app.router.add_route(op.method, PREFIX + op.path, self._wrap(op))

    @staticmethod
    def _wrap(op: Operation) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handle(request: web.Request) -> web.StreamResponse:
            user = request.get(USER)
            if not op.public:
                if user is None:
                    raise NotAuthenticated("authentication required")
                if op.roles is not None and user.role not in op.roles:
                    raise PermissionDenied(
                        f"role {user.role!r} may not {op.method} {op.path}",
                        details={"required_roles": sorted(op.roles)},
                    )
            args: list[Any] = []
            if op.body is not None:
                try:
                    raw = await request.json(loads=json.loads)
                except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                    raise InvalidInput(f"request body is not valid JSON: {exc}") from exc
                args.append(op.body.model_validate(raw))
            if op.query is not None:
                args.append(op.query.model_validate(dict(request.query)))
            result = await op.handler(request, *args)
            if isinstance(result, web.StreamResponse):
                return result
            if isinstance(result, BaseModel):
                result = result.model_dump(mode="json")
            if result is None and op.status == 204:
                return web.Response(status=204)
            return web.json_response(result, status=op.status, dumps=_dumps)

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
                {"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
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
                **({422: "Validation failed"} if op.body or op.query else {}),
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


def _path_params(path: str) -> list[str]:
    out = []
    for part in path.split("/"):
        if part.startswith("{") and part.endswith("}"):
            out.append(part[1:-1].split(":")[0])
    return out
