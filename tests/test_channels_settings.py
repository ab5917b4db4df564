"""The ``channels:`` configuration: a list of {code, kind, ...}, CC_CHANNELS as JSON, each key
of an entry from its own CC_ variable, problems named by key path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from contact_center.config import ConfigError, load_settings

ROOT = Path(__file__).resolve().parent.parent
WA = {
    "code": "wa-main",
    "kind": "whatsapp",
    "phone_number_id": "106540352242922",
    "access_token": "t",
    "app_secret": "from-json",
    "verify_token": "v",
}


def test_the_shipped_config_has_no_channels() -> None:
    assert load_settings(ROOT / "config.yaml", env={}).channels == []


def test_cc_channels_and_a_secret_from_its_own_variable() -> None:
    settings = load_settings(
        ROOT / "config.yaml",
        env={
            "CC_CHANNELS": json.dumps(
                [WA, {"code": "tg", "kind": "telegram", "bot_token": "1:A", "webhook_secret": "s"}]
            ),
            "CC_CHANNELS_0_APP_SECRET": "from-env",
        },
    )
    wa, tg = settings.channels
    assert wa.kind == "whatsapp" and wa.app_secret.get_secret_value() == "from-env"
    assert wa.api_url == "https://graph.facebook.com" and tg.kind == "telegram"


def test_bad_channels_name_the_key_and_hide_secrets() -> None:
    missing = {k: v for k, v in WA.items() if k != "verify_token"}
    with pytest.raises(ConfigError) as err:
        load_settings(ROOT / "config.yaml", env={"CC_CHANNELS": json.dumps([missing])})
    assert "channels[0].whatsapp.verify_token is required" in str(err.value.lines)
    with pytest.raises(ConfigError) as err:
        load_settings(ROOT / "config.yaml", env={"CC_CHANNELS": json.dumps([WA, WA])})
    assert "unique channel codes" in str(err.value.lines)
    with pytest.raises(ConfigError) as err:
        load_settings(
            ROOT / "config.yaml", env={"CC_CHANNELS": json.dumps([{**WA, "kind": "fax"}])}
        )
    assert "channels[0]" in str(err.value.lines)
