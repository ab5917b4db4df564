"""A local IP-to-region table: which region code a website visitor's address is in.

The file is CSV, one ``network,region_code`` per line (IPv4 or IPv6 CIDR: ``5.8.0.0/16,RU-MOW``);
blank lines and ``#`` comments are skipped. Networks may nest: the most specific one wins
(``5.8.0.0/16,RU-MOW`` with ``5.8.1.0/24,RU-SPE`` puts 5.8.1.7 in St Petersburg).

The table is flattened at load into disjoint ranges kept in sorted lists, so a lookup is one
``bisect`` (stdlib only, no GeoIP library).
"""

from __future__ import annotations

import ipaddress
from bisect import bisect_right
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

_MAX_CODE = 32


class IpRegionsError(ValueError):
    """A line of the file that cannot be used; the message names ``file:line``."""


@dataclass
class _Ranges:
    starts: list[int] = field(default_factory=list)
    ends: list[int] = field(default_factory=list)
    codes: list[str] = field(default_factory=list)

    def find(self, value: int) -> str | None:
        i = bisect_right(self.starts, value) - 1
        if i >= 0 and value <= self.ends[i]:
            return self.codes[i]
        return None


@dataclass
class IpRegions:
    """The loaded table; :meth:`lookup` gives an address's region code or None."""

    source: str = ""
    v4: _Ranges = field(default_factory=_Ranges)
    v6: _Ranges = field(default_factory=_Ranges)
    # region code -> the first line that names it (to point at it when the code is unknown)
    lines: dict[str, int] = field(default_factory=dict)

    def lookup(self, address: str | None) -> str | None:
        if not address:
            return None
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone id
        except ValueError:
            return None
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped  # a dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d
        table = self.v4 if ip.version == 4 else self.v6
        return table.find(int(ip))

    @property
    def codes(self) -> set[str]:
        return set(self.lines)

    def __len__(self) -> int:
        return len(self.v4.starts) + len(self.v6.starts)


def load(path: str | Path) -> IpRegions:
    """Read and index ``path``; :class:`IpRegionsError` names the file and line of a bad
    line (or the file when it cannot be read)."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise IpRegionsError(f"{file}: cannot read the IP-to-region file ({exc})") from exc
    return parse(text.splitlines(), source=str(file))


def parse(lines: Iterable[str], *, source: str = "<ip regions>") -> IpRegions:
    """Index ``network,region_code`` lines (see the module's docstring)."""
    table = IpRegions(source=source)
    networks: dict[int, list[tuple[int, int, str]]] = {4: [], 6: []}
    seen: dict[ipaddress.IPv4Network | ipaddress.IPv6Network, int] = {}
    for number, raw in enumerate(lines, start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        where = f"{source}:{number}"
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 2 or not parts[0] or not parts[1]:
            raise IpRegionsError(f"{where}: expected 'network,region_code', got {raw.strip()!r}")
        net_text, code = parts
        try:
            net = ipaddress.ip_network(net_text, strict=False)
        except ValueError as exc:
            raise IpRegionsError(f"{where}: {net_text!r} is not an IP network ({exc})") from exc
        if len(code) > _MAX_CODE or any(c.isspace() for c in code):
            raise IpRegionsError(f"{where}: {code!r} is not a region code")
        if net in seen:
            raise IpRegionsError(f"{where}: {net} is already on line {seen[net]}")
        seen[net] = number
        table.lines.setdefault(code, number)
        networks[net.version].append((int(net.network_address), int(net.broadcast_address), code))
    table.v4 = _flatten(networks[4])
    table.v6 = _flatten(networks[6])
    return table


def _flatten(networks: list[tuple[int, int, str]]) -> _Ranges:
    """Disjoint ranges from CIDR networks, the innermost network deciding each address.

    CIDR blocks either nest or do not overlap at all, so sorted by start (the wider block first
    at an equal start) they form a tree walked with a stack of open blocks, each with the next
    address it still has to cover."""
    out = _Ranges()

    def emit(start: int, end: int, code: str) -> None:
        if start > end:
            return
        if out.ends and out.ends[-1] + 1 == start and out.codes[-1] == code:
            out.ends[-1] = end  # adjacent with the same region: one range
            return
        out.starts.append(start)
        out.ends.append(end)
        out.codes.append(code)

    stack: list[list[int | str]] = []  # [end, code, next uncovered address]

    def close_until(start: int | None) -> None:
        while stack and (start is None or int(stack[-1][0]) < start):
            end, code, cursor = stack.pop()
            emit(int(cursor), int(end), str(code))
            if stack:
                stack[-1][2] = int(end) + 1

    for start, end, code in sorted(networks, key=lambda n: (n[0], -n[1])):
        close_until(start)
        if stack:
            parent = stack[-1]
            emit(int(parent[2]), start - 1, str(parent[1]))
        stack.append([end, code, start])
    close_until(None)
    return out
