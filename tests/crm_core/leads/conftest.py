"""Fixtures of the leads tests: the funnel world and the default rules."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from crm_core.rules import CrmRules
from tests.crm_core.deals.world import Team, make_team


@pytest.fixture
def rules() -> CrmRules:
    return CrmRules()


@pytest.fixture
async def team(session: AsyncSession) -> Team:
    return await make_team(session)
