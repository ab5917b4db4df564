"""Companies: head organisations and members, legal entities, requisites with history."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from crm_core.clients import service as clients
from crm_core.clients.errors import (
    CompanyGroupCycle,
    DuplicateClient,
    InvalidReference,
    RequisitesRetired,
)
from crm_core.clients.model import Requisites
from crm_core.clients.schemas import (
    CompanyInput,
    CompanyPatch,
    LegalEntityInput,
    LegalEntityPatch,
    RequisitesInput,
)
from crm_core.rules import CrmRules
from crm_core.validation import InvalidInn, InvalidOgrn

from .conftest import Acting, Team

SBER = RequisitesInput(
    label="основные",
    full_name="ПАО Сбербанк",
    inn="7707083893",
    kpp="773601001",
    ogrn="1027700132195",
    bik="044525225",
    correspondent_account="30101810400000000225",
    settlement_account="40702810938000000001",
    vat_payer=True,
)


def company(name: str, *reqs: RequisitesInput, **kw: object) -> CompanyInput:
    entities = [LegalEntityInput(name=f"{name} ЮЛ", requisites=list(reqs))] if reqs else []
    return CompanyInput.model_validate({"name": name, "legal_entities": entities, **kw})


async def test_company_with_legal_entity_and_requisites(
    session: AsyncSession, team: Team, rules: CrmRules
) -> None:
    made, _ = await clients.create_company(
        session,
        company("Сбер", SBER, phones=["8 800 555-55-50"], custom={"founded": "1991-06-20"}),
        actor=team.ivan,
        rules=rules,
    )
    await session.commit()
    card = (await clients.company_cards(session, [made]))[0]
    assert card.phones == ["+78005555550"] and card.custom == {"founded": "1991-06-20"}
    [entity] = card.legal_entities
    assert entity.name == "Сбер ЮЛ" and entity.is_active
    [req] = entity.requisites
    assert (req.inn, req.kpp, req.bik, req.vat_payer) == (
        "7707083893",
        "773601001",
        "044525225",
        True,
    )
    assert req.created_by_id == team.ivan.id and req.retired_at is None


async def test_bad_requisites_name_the_nested_field(
    session: AsyncSession, team: Team, rules: CrmRules
) -> None:
    bad = SBER.model_copy(update={"inn": "7707083894"})
    with pytest.raises(InvalidInn) as err:
        await clients.create_company(session, company("X", SBER, bad), actor=team.ivan, rules=rules)
    assert err.value.details == {
        "field": "legal_entities.0.requisites.1.inn",
        "value": "7707083894",
    }
    with pytest.raises(InvalidOgrn):
        await clients.create_company(
            session,
            company("X", SBER.model_copy(update={"ogrn": "1027700132196"})),
            actor=team.ivan,
            rules=rules,
        )


async def test_inn_duplicate_refused_then_merged(
    session: AsyncSession, team: Team, rules: CrmRules
) -> None:
    first, _ = await clients.create_company(
        session, company("Сбербанк", SBER), actor=team.ivan, rules=rules
    )
    await session.commit()
    first_id = first.id
    with pytest.raises(DuplicateClient) as err:
        await clients.create_company(session, company("Сбер", SBER), actor=team.ivan, rules=rules)
    assert err.value.details == {
        "duplicates": [
            {"type": "company", "id": first_id, "matched_on": "inn", "value": "7707083893"}
        ]
    }
    await session.rollback()
    merged, _ = await clients.save_company(
        session,
        company("Сбер", SBER, website="sberbank.ru", phones=["+74955005550"]),
        actor=team.ivan,
        rules=rules,
        on_duplicate="merge",
    )
    await session.commit()
    assert not merged.created and merged.client.id == first_id
    card = (await clients.company_cards(session, [merged.client]))[0]
    assert card.name == "Сбербанк" and card.website == "sberbank.ru"
    assert card.phones == ["+74955005550"]
    assert len(card.legal_entities) == 1  # the same INN is not added twice


async def test_retired_requisites_do_not_count_as_duplicates(
    session: AsyncSession, team: Team, rules: CrmRules
) -> None:
    first, _ = await clients.create_company(
        session, company("Старая", SBER), actor=team.ivan, rules=rules
    )
    req = await session.scalar(select(Requisites))
    assert req is not None
    await clients.retire_requisites(session, req.id, actor=team.ivan, rules=rules)
    assert await clients.find_duplicates(session, inn="7707083893") == []
    second, _ = await clients.create_company(
        session, company("Новая", SBER), actor=team.ivan, rules=rules
    )
    assert second.id != first.id


async def test_requisites_change_retire_and_history(
    session: AsyncSession, team: Team, rules: CrmRules
) -> None:
    made, _ = await clients.create_company(
        session, company("Сбер", SBER), actor=team.ivan, rules=rules
    )
    entity_id = (await clients.company_cards(session, [made]))[0].legal_entities[0].id
    ivan: Acting = {"actor": team.ivan, "rules": rules}
    original = (await clients.requisites_history(session, entity_id, **ivan))[0]
    changed, _ = await clients.change_requisites(
        session,
        original.id,
        SBER.model_copy(update={"legal_address": "Москва, ул. Вавилова, 19"}),
        **ivan,
    )
    await session.commit()
    history = await clients.requisites_history(session, entity_id, **ivan)
    assert [r.id for r in history] == [original.id, changed.id]
    assert history[0].retired_at is not None and history[0].replaced_by_id == changed.id
    assert history[1].retired_at is None and history[1].legal_address == "Москва, ул. Вавилова, 19"
    live = await clients.requisites_history(session, entity_id, include_retired=False, **ivan)
    assert [r.id for r in live] == [changed.id]
    with pytest.raises(RequisitesRetired):
        await clients.change_requisites(session, original.id, SBER, **ivan)
    extra, _ = await clients.add_requisites(
        session,
        entity_id,
        RequisitesInput(label="для отгрузок", full_name="ПАО Сбербанк", inn="7707083893"),
        **ivan,
    )
    await clients.retire_requisites(session, extra.id, **ivan)
    with pytest.raises(RequisitesRetired):
        await clients.retire_requisites(session, extra.id, **ivan)
    await session.commit()
    card = (await clients.company_cards(session, [made]))[0]
    assert [r.id for r in card.legal_entities[0].requisites] == [changed.id]
    await clients.update_legal_entity(session, entity_id, LegalEntityPatch(is_active=False), **ivan)
    assert await clients.requisites_history(session, entity_id, include_retired=False, **ivan) == []


async def test_requisites_inn_of_another_company_is_a_duplicate(
    session: AsyncSession, team: Team, rules: CrmRules
) -> None:
    await clients.create_company(session, company("Сбер", SBER), actor=team.ivan, rules=rules)
    other, _ = await clients.create_company(
        session, company("Другая"), actor=team.ivan, rules=rules
    )
    with pytest.raises(DuplicateClient):
        await clients.add_legal_entity(
            session,
            other.id,
            LegalEntityInput(name="ЮЛ", requisites=[SBER]),
            actor=team.ivan,
            rules=rules,
        )


async def test_group_rolls_up_recursively_and_refuses_cycles(
    session: AsyncSession, team: Team, rules: CrmRules
) -> None:
    holding, _ = await clients.create_company(
        session, company("Холдинг"), actor=team.head, rules=rules
    )
    a, _ = await clients.create_company(
        session, company("A", head_id=holding.id), actor=team.head, rules=rules
    )
    b, _ = await clients.create_company(
        session, company("B", head_id=a.id), actor=team.head, rules=rules
    )
    c, _ = await clients.create_company(
        session, company("C", head_id=holding.id), actor=team.head, rules=rules
    )
    outsider, _ = await clients.create_company(session, company("Z"), actor=team.head, rules=rules)
    await session.commit()
    assert await clients.group_company_ids(session, holding.id) == sorted(
        [holding.id, a.id, b.id, c.id]
    )
    assert await clients.group_company_ids(session, a.id) == sorted([a.id, b.id])
    assert await clients.group_company_ids(session, outsider.id) == [outsider.id]
    assert await clients.top_head_id(session, b.id) == holding.id
    card = (await clients.company_cards(session, [holding]))[0]
    assert card.member_ids == sorted([a.id, c.id])
    for head in (b.id, holding.id):  # a member of its own, itself
        with pytest.raises(CompanyGroupCycle):
            await clients.update_company(
                session, holding.id, CompanyPatch(head_id=head), actor=team.head, rules=rules
            )
    with pytest.raises(InvalidReference):
        await clients.create_company(
            session, company("Q", head_id=999), actor=team.head, rules=rules
        )
    moved, _ = await clients.update_company(
        session, b.id, CompanyPatch(head_id=c.id), actor=team.head, rules=rules
    )
    assert moved.head_id == c.id
    assert await clients.group_company_ids(session, c.id) == sorted([c.id, b.id])


async def test_company_update_and_duplicates(
    session: AsyncSession, team: Team, rules: CrmRules
) -> None:
    a, _ = await clients.create_company(
        session, company("A", emails=["info@a.ru"]), actor=team.ivan, rules=rules
    )
    b, _ = await clients.create_company(session, company("B"), actor=team.ivan, rules=rules)
    with pytest.raises(DuplicateClient):
        await clients.update_company(
            session, b.id, CompanyPatch(emails=["INFO@a.ru"]), actor=team.ivan, rules=rules
        )
    updated, _ = await clients.update_company(
        session,
        a.id,
        CompanyPatch(name="АО «А»", emails=["sales@a.ru"], client_type="wholesaler"),
        actor=team.ivan,
        rules=rules,
    )
    card = (await clients.company_cards(session, [updated]))[0]
    assert card.name == "АО «А»" and card.emails == ["sales@a.ru"]
    assert card.client_type == "wholesaler"


async def test_delete_company_refused_with_history_or_hold(
    session: AsyncSession, team: Team, rules: CrmRules
) -> None:
    from datetime import date
    from decimal import Decimal

    from crm_core.clients.errors import ClientHasHistory
    from crm_core.clients.model import Company, LegalEntity
    from crm_core.errors import PermissionDenied
    from crm_core.invoices.model import Invoice

    billed, _ = await clients.create_company(
        session, company("Счёт", SBER), actor=team.ivan, rules=rules
    )
    entity_id = await session.scalar(select(LegalEntity.id))
    # An invoice on the legal entity alone (no company_id) is history too.
    session.add(
        Invoice(
            number="1",
            legal_entity_id=entity_id,
            amount=Decimal("1"),
            issued_on=date(2026, 1, 1),
            due_on=date(2026, 1, 2),
        )
    )
    held, _ = await clients.create_company(session, company("Архив"), actor=team.ivan, rules=rules)
    held.legal_hold = True
    plain, _ = await clients.create_company(
        session, company("Пустая", phones=["+74951234567"]), actor=team.ivan, rules=rules
    )
    await session.commit()
    with pytest.raises(PermissionDenied):
        await clients.delete_company(session, plain.id, actor=team.ivan, rules=rules)
    with pytest.raises(ClientHasHistory) as err:
        await clients.delete_company(session, billed.id, actor=team.head, rules=rules)
    assert err.value.details["referenced_by"] == ["invoices"]
    with pytest.raises(ClientHasHistory) as err:
        await clients.delete_company(session, held.id, actor=team.head, rules=rules)
    assert err.value.details["legal_hold"] is True
    plain_id = plain.id
    await clients.delete_company(session, plain_id, actor=team.admin, rules=rules)
    await session.commit()
    assert await session.get(Company, plain_id) is None
