"""Configuration: defaults, file, environment overrides and the error messages."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from contact_center.config import DEFAULT_DATABASE_URL, ConfigError, load_settings

ROOT = Path(__file__).resolve().parent.parent


def test_shipped_config_is_valid_and_documented() -> None:
    settings = load_settings(ROOT / "config.yaml", env={})
    assert settings.database.url == DEFAULT_DATABASE_URL
    assert settings.locale.default == "ru"
    assert settings.telephony.count_threshold_s == 60
    assert settings.pbx[0].trunks == ["provider"]
    # Every key line of the shipped file carries a comment.
    for line in (ROOT / "config.yaml").read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or stripped.startswith("- "):
            continue
        if stripped.endswith(":") and ":" not in stripped[:-1]:
            continue  # a section header
        assert "#" in line, f"undocumented key in config.yaml: {line!r}"


def test_no_file_gives_embedded_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings(env={})
    assert settings.database.url == DEFAULT_DATABASE_URL
    assert settings.redis.url is None
    assert settings.pbx == []


def test_environment_overrides_every_kind_of_key() -> None:
    settings = load_settings(
        ROOT / "config.yaml",
        env={
            "CC_DATABASE_URL": "postgresql+asyncpg://u:p@db:5432/cc",
            "CC_REDIS_URL": "redis://127.0.0.1:6379/0",
            "CC_SERVER_PORT": "9090",
            "CC_DATABASE_MIGRATE_ON_START": "false",
            "CC_PBX_0_SECRET": "s3cret",
            "CC_CRM_CLIENT_TYPES": '["wholesaler", "retail"]',
            "CC_LOCALE_DEFAULT": "en",
        },
    )
    assert settings.database.url.startswith("postgresql+asyncpg://")
    assert settings.redis.url == "redis://127.0.0.1:6379/0"
    assert settings.server.port == 9090
    assert settings.database.migrate_on_start is False
    assert settings.pbx[0].secret.get_secret_value() == "s3cret"
    assert settings.pbx[0].name == "main"  # the rest of the entry comes from the file
    assert settings.crm.client_types == ["wholesaler", "retail"]
    assert settings.locale.default == "en"


def test_whole_list_from_environment() -> None:
    settings = load_settings(
        ROOT / "config.yaml",
        env={"CC_PBX": '[{"name": "a", "username": "u", "secret": "s", "trunks": ["t1"]}]'},
    )
    assert [p.name for p in settings.pbx] == ["a"]
    assert settings.pbx[0].trunks == ["t1"]


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"CC_SERVER_PORT": "eighty"}, "config: server.port = 'eighty': "),
        ({"CC_SERVER_PORT": "70000"}, "config: server.port = '70000': "),
        ({"CC_DATABASE_URL": "mysql://x/y"}, "config: database.url = 'mysql://x/y': expected"),
        ({"CC_PBX_0_EXTENSION_PATTERN": "(["}, "config: pbx[0].extension_pattern = '([': "),
        ({"CC_LOCALE_DEFAULT": "de"}, "config: locale.default = 'de': "),
        ({"CC_AUTH_SCRYPT_N": "3000"}, "config: auth.scrypt_n = '3000': expected a power of two"),
    ],
)
def test_bad_value_names_key_value_and_source(env: dict[str, str], expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(ROOT / "config.yaml", env=env)
    assert len(info.value.lines) == 1
    line = info.value.lines[0]
    assert line.startswith(expected), line
    assert f"(from {next(iter(env))})" in line


def test_unknown_and_missing_keys_in_file(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("server:\n  prot: 1\npbx:\n  - name: x\n    username: u\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path, env={})
    assert f"config: unknown key server.prot (in {path})" in info.value.lines
    assert f"config: pbx[0].secret is required (in {path})" in info.value.lines


def test_secret_values_are_not_echoed(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("pbx:\n  - name: x\n    username: u\n    secret: [hunter2]\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path, env={})
    assert "hunter2" not in str(info.value)
    assert "pbx[0].secret = '***'" in str(info.value)


def test_duplicate_pbx_names_refused() -> None:
    entry = '{"name": "a", "username": "u", "secret": "s"}'
    pbx = f"[{entry}, {entry}]"
    with pytest.raises(ConfigError, match="unique PBX names"):
        load_settings(ROOT / "config.yaml", env={"CC_PBX": pbx})


def test_unparseable_yaml_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("server: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(bad, env={})
    with pytest.raises(ConfigError, match="no such configuration file"):
        load_settings(tmp_path / "absent.yaml", env={})


def test_tracking_sites_with_numbers_and_pools() -> None:
    site: dict[str, Any] = {
        "code": "shop",
        "name": "Shop",
        "numbers": [{"did": "8 (495) 000-11-22", "source": "expo_2026"}],
        "defaults": {"RU-SPE": "8 812 000-11-11", "*": "+74950001111"},
        "pools": [
            {"source": "yandex_direct", "region": "RU-SPE", "numbers": ["+78120002201"]},
        ],
    }
    settings = load_settings(ROOT / "config.yaml", env={"CC_TRACKING_SITES": json.dumps([site])})
    parsed = settings.tracking.sites[0]
    assert parsed.numbers[0].did == "+74950001122"  # stored in E.164
    assert parsed.defaults == {"RU-SPE": "+78120001111", "*": "+74950001111"}
    assert parsed.pools[0].numbers == ["+78120002201"]
    assert settings.tracking.ip_regions_file is None

    site["pools"][0]["numbers"] = ["+78120002201", "12"]
    with pytest.raises(ConfigError) as info:
        load_settings(ROOT / "config.yaml", env={"CC_TRACKING_SITES": json.dumps([site])})
    assert info.value.lines == [
        "config: tracking.sites[0].pools[0].numbers[1] = '12': expected a phone number "
        "(E.164 or Russian format), got '12' (from CC_TRACKING_SITES)"
    ]

    site["pools"][0]["numbers"] = ["+78120002201", "+7 495 000-11-22"]
    with pytest.raises(ConfigError) as info:
        load_settings(ROOT / "config.yaml", env={"CC_TRACKING_SITES": json.dumps([site])})
    assert info.value.lines == [
        "config: tracking.sites: tracking.sites[0].pools[0].numbers[1] = +74950001122: "
        "already declared at tracking.sites[0].numbers[0].did (from CC_TRACKING_SITES)"
    ]


def test_tracking_sites_in_the_file_name_the_bad_entry(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    head = "tracking:\n  sites:\n    - code: shop\n      name: Shop\n      pools:\n"
    pool = "        - {source: yandex_direct, region: RU-SPE, numbers: ['+7812000220%d']}\n"
    path.write_text(head + pool % 1 + "        - {source: google_ads, numbers: []}\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path, env={})
    assert info.value.lines == [
        f"config: tracking.sites[0].pools[1].numbers = []: List should have at least 1 item "
        f"after validation, not 0 (in {path})",
    ]
    path.write_text(head + pool % 1 + pool % 2)
    with pytest.raises(ConfigError) as info:
        load_settings(path, env={})
    assert info.value.lines == [
        f"config: tracking.sites[0]: pools[1]: the same source and region as pools[0] (in {path})",
    ]
