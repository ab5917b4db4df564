"""The local IP-to-region table: nested networks, IPv6, and errors naming file:line."""

from __future__ import annotations

from pathlib import Path

import pytest

from routing import ip_regions

TABLE = """\
# network,region_code
5.8.0.0/16,RU-MOW
5.8.1.0/24,RU-SPE          # inside Moscow's block: the narrower one wins
5.8.1.128/25,RU-LEN
5.8.3.0/24,RU-SPE
2a02:6b8::/32,RU-MOW
"""


def test_the_innermost_network_decides() -> None:
    table = ip_regions.parse(TABLE.splitlines())
    assert table.lookup("5.8.0.1") == "RU-MOW"
    assert table.lookup("5.8.1.1") == "RU-SPE"
    assert table.lookup("5.8.1.200") == "RU-LEN"
    assert table.lookup("5.8.2.0") == "RU-MOW"  # between two children: the parent again
    assert table.lookup("5.8.3.255") == "RU-SPE"
    assert table.lookup("5.8.255.255") == "RU-MOW"
    assert table.lookup("5.9.0.0") is None
    assert table.lookup("5.7.255.255") is None
    assert table.lookup("2a02:6b8::1") == "RU-MOW"
    assert table.lookup("::ffff:5.8.1.1") == "RU-SPE"  # IPv4 seen on a dual-stack socket
    assert table.lookup("unknown") is None and table.lookup(None) is None
    assert table.codes == {"RU-MOW", "RU-SPE", "RU-LEN"}
    assert table.lines["RU-SPE"] == 3


def test_lookup_matches_a_linear_scan() -> None:
    """The flattened ranges agree with "the longest prefix that contains the address"."""
    import ipaddress

    table = ip_regions.parse(TABLE.splitlines())
    nets = [
        (ipaddress.ip_network(line.split(",")[0]), line.split(",")[1].split()[0])
        for line in TABLE.splitlines()[1:]
    ]
    for i in range(0, 4 * 256, 3):
        ip = ipaddress.ip_address(f"5.8.{i // 256}.{i % 256}")
        covering = [(n.prefixlen, code) for n, code in nets if ip in n]
        assert table.lookup(str(ip)) == (max(covering)[1] if covering else None), ip


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("5.8.0.0/16", "expected 'network,region_code'"),
        ("5.8.0.0/16,RU-MOW,extra", "expected 'network,region_code'"),
        ("5.8.300.0/24,RU-MOW", "'5.8.300.0/24' is not an IP network"),
        ("5.8.0.0/16,", "expected 'network,region_code'"),
        ("10.0.0.0/8,RU MOW", "'RU MOW' is not a region code"),
        ("10.0.0.0/8,RU-MOW", "10.0.0.0/8 is already on line 1"),
    ],
)
def test_a_bad_line_names_the_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "ip.csv"
    path.write_text(f"10.0.0.0/8,RU-MOW\n# comment\n\n{line}\n")
    with pytest.raises(ip_regions.IpRegionsError) as info:
        ip_regions.load(path)
    assert str(info.value).startswith(f"{path}:4: {message}"), info.value


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ip_regions.IpRegionsError, match=r"absent\.csv: cannot read"):
        ip_regions.load(tmp_path / "absent.csv")
