"""The call log service on SQLite and PostgreSQL."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from crm_core.calls import service as calls
from crm_core.users import service as users
from tests.ami._support import folded_call


async def test_store_call_is_idempotent_and_keeps_utc(session: AsyncSession) -> None:
    facts = folded_call("c_inbound_short_answered")
    call, created = await calls.store_call(session, "main", facts)
    again, created_again = await calls.store_call(session, "main", facts)
    await session.commit()
    assert created and not created_again and again.id == call.id
    session.expunge_all()
    stored = await calls.get_call(session, "main", facts.call_id)
    assert stored is not None
    assert stored.started_at == facts.started_at and stored.started_at.tzinfo is not None
    assert stored.rang == ["101"] and stored.did == "+74950000001"
    assert facts.outside_number == "+74957654321"


async def test_extension_owner_prefers_the_pbx_specific_owner(session: AsyncSession) -> None:
    anyone, _ = await users.create_user(
        session, login="a", role="manager", password="password1", extensions=["101"], scrypt_n=1024
    )
    specific, _ = await users.create_user(
        session,
        login="b",
        role="manager",
        password="password1",
        extensions=["101"],
        pbx="branch",
        scrypt_n=1024,
    )
    await session.commit()
    on_main = await calls.extension_owner(session, "main", "101")
    assert on_main is not None and on_main.id == anyone.id
    on_branch = await calls.extension_owner(session, "branch", "101")
    assert on_branch is not None and on_branch.id == specific.id
    assert await calls.extension_owner(session, "main", "999") is None
    assert await calls.extension_owner(session, "main", None) is None


async def test_list_filters(session: AsyncSession) -> None:
    for trace in ("a_inbound_queue_answered", "b_inbound_missed", "d_outbound_answered"):
        await calls.store_call(session, "main", folded_call(trace))
    await session.commit()
    rows, total = await calls.list_calls(session)
    assert total == 3 and [r.started_at for r in rows] == sorted(
        (r.started_at for r in rows), reverse=True
    )
    missed, n = await calls.list_calls(session, disposition="missed")
    assert n == 1 and missed[0].caller == "+79161234567"
    by_number, n = await calls.list_calls(session, number="+74951234567")
    assert n == 1 and by_number[0].direction == "inbound"
    outbound, n = await calls.list_calls(session, direction="outbound")
    assert n == 1 and outbound[0].callee == "+78125550011"
