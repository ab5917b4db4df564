"""The recordings API: listen (HTTP Range, access control, audit), a PBX pushing its files,
legal hold; installs the recordings runtime."""

from __future__ import annotations

import hmac
import re
from pathlib import Path
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, Field
from sqlalchemy import select

from contact_center import recordings_service
from contact_center.api.common import actor, clock, path_id, settings, uow
from contact_center.http.api import Api
from contact_center.keys import RECORDINGS
from crm_core.audit.model import AuditEntry
from crm_core.calls import service as calls
from crm_core.clients.model import Company, Contact
from crm_core.deals.model import Deal
from crm_core.errors import (
    Conflict,
    InvalidInput,
    NotAuthenticated,
    NotFound,
    PermissionDenied,
    Unavailable,
)
from crm_core.recordings import service as recordings
from crm_core.recordings.model import Recording, RecordingState
from recordings.intake import receive_upload
from recordings.storage import content_type

api = Api()
TAGS = ["recordings"]
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The half-open byte range an HTTP ``Range`` header asks for, or None for the whole file
    (no header, another unit, several ranges, or a malformed one: RFC 9110 lets a server
    ignore those). Raises :class:`RangeNotSatisfiable` for a range outside the file."""
    if not header:
        return None
    match = _RANGE.match(header.strip())
    if match is None:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # the last N bytes
        length = int(last)
        if length == 0:
            raise RangeNotSatisfiable(size)
        return max(0, size - length), size
    start = int(first)
    stop = size if not last else min(int(last) + 1, size)
    if last and int(last) < start:
        return None
    if start >= size:
        raise RangeNotSatisfiable(size)
    return start, stop


class RangeNotSatisfiable(Exception):
    def __init__(self, size: int) -> None:
        super().__init__(f"range outside the recording ({size} bytes)")
        self.size = size


class RecordingQuery(BaseModel):
    call_id: str = Field(min_length=1, max_length=64, description="the call's Linkedid")
    pbx: str | None = Field(None, max_length=64)


@api.route(
    "GET",
    "/recordings",
    summary="The recordings of a call (metadata and state; stream one by its url)",
    query=RecordingQuery,
    tags=TAGS,
)
async def list_recordings(request: web.Request, query: RecordingQuery) -> list[dict[str, Any]]:
    user = actor(request)
    async with uow(request) as w:
        stmt = select(Recording).where(Recording.call_ref == query.call_id)
        if query.pbx:
            stmt = stmt.where(Recording.pbx == query.pbx)
        return [
            recordings.describe(row)
            for row in await w.session.scalars(stmt.order_by(Recording.id))
            if await recordings.may_listen(w.session, row, user)
        ]


@api.route(
    "GET",
    "/recordings/{recording_id}",
    summary="Listen: the audio, with HTTP Range (206) for seeking; every access is audited",
    tags=TAGS,
    errors={
        403: "a recording of another manager's call or client",
        404: "no such recording",
        409: "not stored (yet)",
        416: "the Range lies outside the recording",
    },
)
async def stream_recording(request: web.Request) -> web.StreamResponse:
    user = actor(request)
    runtime = request.app[RECORDINGS]
    if runtime is None:
        raise Unavailable("recordings are switched off (recordings.enabled)")
    recording_id = path_id(request, "recording_id", "recording")
    async with uow(request) as w:
        try:
            row = await recordings.get_for_listening(w.session, recording_id, user)
        except PermissionDenied:
            recordings.audit_listen(
                w.session, recording_id, user, at=clock(request).now(), detail={}, allowed=False
            )
            await w.commit()
            raise
        if row.state != RecordingState.STORED.value or not row.storage_key:
            raise Conflict(
                f"recording {row.id} is {row.state}", details={"id": row.id, "state": row.state}
            )
        key = row.storage_key
        size = await runtime.storage.size(key)
        header = request.headers.get("Range")
        try:
            wanted = parse_range(header, size)
        except RangeNotSatisfiable:
            return web.Response(
                status=416, headers={"Content-Range": f"bytes */{size}", "Accept-Ranges": "bytes"}
            )
        start, stop = wanted or (0, size)
        recordings.audit_listen(
            w.session,
            row.id,
            user,
            at=clock(request).now(),
            detail={"range": [start, stop - 1] if wanted else None, "size": size},
        )
        await w.commit()
        etag = f'"{row.sha256}"' if row.sha256 else None
    headers = {
        "Content-Type": content_type(key),
        "Accept-Ranges": "bytes",
        "Content-Length": str(stop - start),
        "Cache-Control": "private, max-age=3600",
    }
    if etag:
        headers["ETag"] = etag
    if wanted:
        headers["Content-Range"] = f"bytes {start}-{stop - 1}/{size}"
    resp = web.StreamResponse(status=206 if wanted else 200, headers=headers)
    await resp.prepare(request)
    async for chunk in await runtime.storage.open_range(key, start, stop):
        await resp.write(chunk)
    await resp.write_eof()
    return resp


def _pbx_of(request: web.Request) -> str:
    """The PBX whose upload token (header ``X-PBX-Token``) authorises this request; a header of
    its own, since ``Authorization`` carries users' tokens."""
    token = request.headers.get("X-PBX-Token", "").strip()
    for pbx, secret in settings(request).recordings.upload_tokens.items():
        if token and hmac.compare_digest(token.encode(), secret.get_secret_value().encode()):
            return str(pbx)
    raise NotAuthenticated("a PBX upload token is required (recordings.upload_tokens)")


async def _parts(part: Any) -> Any:
    while chunk := await part.read_chunk(256 * 1024):
        yield chunk


@api.route(
    "POST",
    "/recordings",
    summary="A PBX pushes a MixMonitor file (multipart: call_id, then file); safe to retry",
    public=True,
    status=202,
    tags=TAGS,
    errors={401: "no or a wrong PBX upload token", 422: "bad call id or file name"},
)
async def upload_recording(request: web.Request) -> dict[str, Any]:
    pbx = _pbx_of(request)
    cfg = settings(request).recordings
    call_id = request.query.get("call_id", "")
    reader = await request.multipart()
    uploaded = None
    async for part in reader:
        if part.name == "call_id":
            call_id = (await part.text()).strip()
        elif part.name == "file":
            if not call_id:
                raise InvalidInput(
                    "call_id must come before the file", details={"field": "call_id"}
                )
            uploaded = await receive_upload(
                _parts(part),
                Path(cfg.spool_dir),
                part.filename or "",
                call_id,
                max_bytes=cfg.max_upload_mb * 1024 * 1024,
            )
    if uploaded is None:
        raise InvalidInput("the multipart body has no file part", details={"field": "file"})
    now = clock(request).now()
    async with uow(request) as w:
        call = await calls.get_call(w.session, pbx, call_id)
        row = await recordings_service.file_arrived(
            w.session,
            pbx=pbx,
            call_ref=call_id,
            call_pk=call.id if call else None,
            filename=uploaded.path.name,
            now=now,
        )
        await w.commit()
        return {
            "recording_id": row.id,
            "state": row.state,
            "size": uploaded.size,
            "sha256": uploaded.sha256,
        }


class LegalHoldInput(BaseModel):
    object_type: Literal["contact", "company", "deal"]
    id: int = Field(ge=1)
    hold: bool = Field(description="true: keep this client's or deal's recordings past retention")


@api.route(
    "POST",
    "/legal-holds",
    summary="Put a contact, company or deal on legal hold (or release it); audited",
    body=LegalHoldInput,
    roles=["admin", "head"],
    tags=TAGS,
)
async def set_legal_hold(request: web.Request, body: LegalHoldInput) -> dict[str, Any]:
    user = actor(request)
    model: Any = {"contact": Contact, "company": Company, "deal": Deal}[body.object_type]
    async with uow(request) as w:
        record = await w.session.get(model, body.id)
        if record is None:
            raise NotFound(f"no {body.object_type} {body.id}", details={"id": body.id})
        record.legal_hold = body.hold
        w.session.add(
            AuditEntry(
                at=clock(request).now(),
                user_id=user.id,
                action="legal_hold.set" if body.hold else "legal_hold.release",
                object_type=body.object_type,
                object_id=str(body.id),
            )
        )
        await w.commit()
    return {"object_type": body.object_type, "id": body.id, "legal_hold": body.hold}
