"""The routing lookup gives the dialplan an extension or nothing, whatever goes wrong (issue 14):
never "0" (every unrouted call ran Dial(PJSIP/0)), never an error's JSON body (it broke
GotoIf with an expression syntax error)."""

from __future__ import annotations

from typing import Any

from contact_center.app import create_app


async def test_the_dialplan_gets_an_extension_or_nothing(
    make_settings: Any, database_url: str, aiohttp_client_factory: Any
) -> None:
    settings = make_settings(
        CC_DATABASE_URL=database_url, CC_DISTRIBUTION_DIAL_TOKENS='{"main": "s3cret-token"}'
    )
    client = await aiohttp_client_factory(create_app(settings, announce=lambda _t: None))
    query = "/api/v1/routing/dial?caller=%2B79161234567&did=%2B74951112233"
    # Nobody to route to: an empty answer, so the dialplan's "no target" branch runs.
    ok = await client.get(query, headers={"X-PBX-Token": "s3cret-token"})
    assert (ok.status, await ok.text()) == (200, "")
    # A wrong or missing token: 401 with an empty body (CURL() stores any body).
    for headers in ({"X-PBX-Token": "wrong"}, {}):
        bad = await client.get(query, headers=headers)
        assert (bad.status, await bad.text()) == (401, "")
    # The JSON form still says what is wrong.
    bad = await client.get(query + "&format=json", headers={"X-PBX-Token": "wrong"})
    assert bad.status == 401 and "token" in (await bad.json())["message"]
