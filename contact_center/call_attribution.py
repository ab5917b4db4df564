"""Where a call came from: the tracking attribution of the number the caller dialed (its
source, campaign, visitor session) and the call's region, as the pop-up and the call log
carry them."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncSession


class CallRegionLike(Protocol):
    @property
    def code(self) -> str | None: ...  # the region's code

    @property
    def id(self) -> int | None: ...

    @property
    def origin(self) -> str | None: ...  # tracking | did | default


class CallAttributor(Protocol):
    """Call tracking as the CRM sees it (``contact_center.tracking_service.TrackingService``)."""

    async def attribute_call(
        self, session: AsyncSession, did: str, at: datetime
    ) -> dict[str, Any] | None: ...

    async def call_region(
        self, did: str | None, attribution: dict[str, Any] | None
    ) -> CallRegionLike: ...


async def call_tracking(
    tracker: CallAttributor, session: AsyncSession, did: str | None, at: datetime
) -> dict[str, Any] | None:
    """What a call to ``did`` ringing at ``at`` carries: ``did``, ``source_id``, ``source``,
    ``campaign``, ``region`` (code), ``region_id``, ``region_from`` and, from call tracking,
    ``visitor_id``, ``site``, ``utm``, ``landing_page``, ``referrer``, ``low_confidence``.

    A pool number is attributed to the visitor session that held it at ring time, a static
    number (a tracking number, or a source of kind ``tracking_number`` with the DID as its
    code) to its source, both from memory; the region is the call's region, the one the
    dialplan routed by (tracking, else ``distribution.did_regions``, else
    ``distribution.default_region``). A DID tracking does not know gives a region-only dict
    when a region applies, else None; no DID (an outbound or internal call) gives None.
    """
    if not did:
        return None
    found = await tracker.attribute_call(session, did, at)
    region = await tracker.call_region(did, found)
    if found is None and region.code is None:
        return None
    # A DID tracking does not know carries no source, only the region.
    tracking = found or {"did": did, "source_id": None, "source": None, "campaign": None}
    return {**tracking, "region": region.code, "region_id": region.id, "region_from": region.origin}
