"""WhatsApp Cloud API webhook deliveries as Meta sends them, signed by the test (for the
inbox's API and browser tests)."""

from __future__ import annotations

import json
import time
from typing import Any

from channels.whatsapp import sign
from crm_core.db import utcnow
from crm_core.distribution import rules as distribution_rules
from crm_core.distribution.schemas import ManagerInput, RuleInput
from crm_core.users import service as users

PHONE_NUMBER_ID = "106540352242922"
APP_SECRET = "inbox-app-secret"
VERIFY_TOKEN = "inbox-verify"
TOKEN = "wa-token"


def wa_channel(api_url: str, code: str = "wa-main") -> dict[str, Any]:
    return {
        "code": code,
        "kind": "whatsapp",
        "name": "WhatsApp продаж",
        "phone_number_id": PHONE_NUMBER_ID,
        "access_token": TOKEN,
        "app_secret": APP_SECRET,
        "verify_token": VERIFY_TOKEN,
        "waba_id": "102290129340398",
        "api_url": api_url,
    }


def _envelope(value: dict[str, Any]) -> bytes:
    payload = {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": "102290129340398",
                "changes": [
                    {
                        "value": {
                            "messaging_product": "whatsapp",
                            "metadata": {
                                "display_phone_number": "74951234567",
                                "phone_number_id": PHONE_NUMBER_ID,
                            },
                            **value,
                        },
                        "field": "messages",
                    }
                ],
            }
        ],
    }
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


def wa_text(
    mid: str,
    text: str,
    *,
    wa_id: str = "79161234567",
    name: str = "Иван Петров",
    ts: float | None = None,
) -> bytes:
    return _envelope(
        {
            "contacts": [{"profile": {"name": name}, "wa_id": wa_id}],
            "messages": [
                {
                    "from": wa_id,
                    "id": mid,
                    "timestamp": str(int(ts if ts is not None else time.time())),
                    "type": "text",
                    "text": {"body": text},
                }
            ],
        }
    )


def wa_image(mid: str, media_id: str, *, caption: str = "", wa_id: str = "79161234567") -> bytes:
    return _envelope(
        {
            "contacts": [{"profile": {"name": "Иван Петров"}, "wa_id": wa_id}],
            "messages": [
                {
                    "from": wa_id,
                    "id": mid,
                    "timestamp": str(int(time.time())),
                    "type": "image",
                    "image": {"caption": caption, "mime_type": "image/png", "id": media_id},
                }
            ],
        }
    )


def wa_status(
    mid: str,
    status: str,
    *,
    wa_id: str = "79161234567",
    ts: float | None = None,
    error: int | None = None,
) -> bytes:
    item: dict[str, Any] = {
        "id": mid,
        "status": status,
        "timestamp": str(int(ts if ts is not None else time.time())),
        "recipient_id": wa_id,
    }
    if error is not None:
        item["errors"] = [{"code": error, "title": "Message undeliverable"}]
    return _envelope({"statuses": [item]})


def signed(body: bytes, secret: str = APP_SECRET) -> dict[str, str]:
    return {"X-Hub-Signature-256": sign(body, secret), "Content-Type": "application/json"}


TEMPLATES = [
    {
        "id": "1",
        "name": "order_ready",
        "language": "ru",
        "status": "APPROVED",
        "category": "UTILITY",
        "components": [{"type": "BODY", "text": "{{1}}, заказ {{2}} готов к отгрузке."}],
    },
    {
        "id": "2",
        "name": "follow_up",
        "language": "ru",
        "status": "APPROVED",
        "category": "MARKETING",
        "components": [
            {"type": "BODY", "text": "Здравствуйте, {{first_name}}! Актуален ли заказ?"}
        ],
    },
]


async def manager_on_duty(session: Any, login: str = "ivan", name: str = "") -> int:
    """A manager (password ``password1``) whom a fixed distribution rule gives every new
    client; his id. The caller commits."""
    user, _ = await users.create_user(
        session,
        login=login,
        role="manager",
        password="password1",
        display_name=name,
        scrypt_n=1024,
    )
    await distribution_rules.create_rule(
        session, RuleInput(strategy="fixed", managers=[ManagerInput(user_id=user.id)]), now=utcnow()
    )
    return int(user.id)
