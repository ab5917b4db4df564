"""Pure AMI framing: raw bytes from the manager socket in, header frames out.

Nothing here does I/O. :func:`parse_frames` is the pure core (buffer in, frames plus the
unparsed tail out); :class:`FrameParser` keeps the tail between ``feed()`` calls so a socket
reader can hand it whatever ``recv()`` returned.

Wire format (Asterisk Manager Interface): an optional banner line
``Asterisk Call Manager/x.y.z`` when the connection opens, then messages made of
``Key: Value`` lines, each message terminated by an empty line. Lines end with ``\\r\\n``;
bare ``\\n`` is tolerated. Bytes are UTF-8 and are decoded only once a whole message is
buffered, so a multi-byte character split across two reads is never damaged.
"""

from collections.abc import Iterator, Mapping
from typing import NamedTuple

__all__ = ["BANNER_PREFIX", "Frame", "FrameParser", "ParseResult", "parse_frames"]

BANNER_PREFIX = "Asterisk Call Manager/"

_SEP = b"\n\n"


class Frame:
    """One AMI message: an event, a response or an action, as ordered headers.

    Lookups return the first occurrence of a header; :meth:`getall` returns every value of a
    repeated header (``ChanVariable``, ``Variable``, ``Output``), in wire order.
    """

    __slots__ = ("_multi", "headers")

    def __init__(self, headers: dict[str, str], multi: dict[str, list[str]] | None = None) -> None:
        self.headers = headers
        # Only built for the rare frame that repeats a header; None keeps the hot path cheap.
        self._multi = multi

    @property
    def event(self) -> str | None:
        """The ``Event`` header (checked first: an event may also carry ``Response``)."""
        return self.headers.get("Event")

    @property
    def response(self) -> str | None:
        """The ``Response`` header of an action response (``Success``, ``Error`` …)."""
        return self.headers.get("Response")

    def get(self, key: str, default: str | None = None) -> str | None:
        """First value of ``key`` or ``default``."""
        return self.headers.get(key, default)

    def getall(self, key: str) -> list[str]:
        """Every value of ``key`` in wire order (empty list when absent)."""
        if self._multi is not None and key in self._multi:
            return list(self._multi[key])
        value = self.headers.get(key)
        return [] if value is None else [value]

    def __getitem__(self, key: str) -> str:
        return self.headers[key]

    def __contains__(self, key: object) -> bool:
        return key in self.headers

    def __iter__(self) -> Iterator[str]:
        return iter(self.headers)

    def __len__(self) -> int:
        return len(self.headers)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Frame):
            return NotImplemented
        return self.headers == other.headers and (self._multi or {}) == (other._multi or {})

    # Equal frames compare by their (mutable) headers: a frame is not hashable. typeshed
    # declares __hash__ as a method, so mypy cannot see this standard way of saying so.
    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Frame({self.headers!r})"


class ParseResult(NamedTuple):
    """What :func:`parse_frames` found in a buffer."""

    frames: list[Frame]
    tail: bytes
    """Bytes after the last complete frame (already line-ending normalised); feed them back."""
    malformed_lines: int
    banner: str | None
    skipped_events: int = 0
    """Events dropped unparsed because the :class:`EventFilter` does not name them."""


def _parse_block_slow(lines: list[str]) -> tuple[Frame | None, int, str | None]:
    headers: dict[str, str] = {}
    multi: dict[str, list[str]] | None = None
    malformed = 0
    banner: str | None = None
    follows = False
    output: list[str] = []
    for line in lines:
        if not line or line == "\r":
            continue
        key, sep, value = line.partition(": ")
        if not sep:
            key, sep, value = line.partition(":")
        if not sep or not key or " " in key:
            if line.startswith(BANNER_PREFIX):
                banner = line.rstrip("\r")
            elif follows:
                # Legacy "Response: Follows" command output is free text up to --END COMMAND--.
                output.append(line.rstrip("\r"))
            else:
                malformed += 1
            continue
        if key in headers:
            if multi is None:
                multi = {}
            multi.setdefault(key, [headers[key]]).append(value)
        else:
            headers[key] = value
            if key == "Response" and value == "Follows":
                follows = True
    if output:
        if "Output" in headers:
            if multi is None:
                multi = {}
            multi.setdefault("Output", [headers["Output"]]).extend(output)
        else:
            headers["Output"] = output[0]
            if len(output) > 1:
                if multi is None:
                    multi = {}
                multi["Output"] = output
    if not headers:
        return None, malformed, banner
    return Frame(headers, multi), malformed, banner


class EventFilter(NamedTuple):
    """Which events a consumer needs; the others are dropped before their headers are split.

    A PBX sends many events no call record needs (a ``VarSet`` for every dialplan variable,
    ``Newexten`` for every dialplan step, device and state reports): of the frames of the
    real captures in tests/fixtures/ami two in three are such, of a plain inbound call three
    in four. Dropping them costs a prefix comparison
    instead of a parse. Never dropped: an event naming an ``ActionID`` (an answer to one of our
    actions), an event in ``events``, a ``VarSet`` of a variable in ``variables``.

    ``partial`` names events of ``events`` of which the consumer reads only a few headers: of
    those only ``Event`` and the headers named are taken (the first line starting ``Name: ``
    each), the rest of the frame is not split. Media reports (``RTCPSent``,
    ``RTCPReceived``, a pair every few seconds per channel) are most of a live call's bytes;
    the fold reads three of their forty headers. An event naming an ``ActionID`` is always
    parsed whole.
    """

    events: frozenset[str]
    variables: frozenset[str] = frozenset()
    partial: Mapping[str, tuple[str, ...]] = {}


def _named_variable(block: str, variables: frozenset[str]) -> bool:
    """Whether the ``VarSet`` event ``block`` sets one of ``variables``."""
    at = block.find("\nVariable: ")
    if at < 0:
        return False
    stop = block.find("\n", at + 11)
    return block[at + 11 : stop if stop > 0 else None] in variables


def _partial(block: str, name: str, keys: tuple[str, ...]) -> Frame:
    """The frame of event ``name`` with only ``keys`` (where present) besides ``Event``."""
    headers = {"Event": name}
    for key in keys:
        at = block.find(f"\n{key}: ")
        if at < 0:
            continue
        at += len(key) + 3
        stop = block.find("\n", at)
        headers[key] = block[at:stop] if stop >= 0 else block[at:]
    return Frame(headers)


def parse_frames(buffer: bytes, keep: EventFilter | None = None) -> ParseResult:
    """Split ``buffer`` into complete frames; return them with the unparsed tail.

    Pure: the same input always gives the same output. Garbage never raises: a line without
    a ``:`` is skipped and counted in ``malformed_lines``; undecodable bytes become U+FFFD.
    With ``keep``, events it does not name are dropped unparsed and counted in
    ``skipped_events``.
    """
    if b"\r" in buffer:
        buffer = buffer.replace(b"\r\n", b"\n")
        # Every run of CRs before a LF goes, not only the last: normalising is then the same
        # whether the tail was normalised before the next read or not ("\r\r\n" cut after
        # the first CR gave a different header value than read whole). Looking for a CR
        # first: a single byte is found (or not) many times faster than a pair.
        while b"\r" in buffer and b"\r\n" in buffer:
            buffer = buffer.replace(b"\r\n", b"\n")
    end = buffer.rfind(_SEP)
    if end < 0:
        return ParseResult([], buffer, 0, None)
    tail = buffer[end + 2 :]
    # Cutting at an empty line never splits a UTF-8 sequence (they contain no 0x0A byte),
    # so the complete part decodes as one piece.
    text = buffer[:end].decode("utf-8", "replace")
    frames: list[Frame] = []
    malformed = 0
    banner: str | None = None
    append = frames.append
    skipped = 0
    events, variables, partial = keep if keep is not None else (None, frozenset[str](), {})
    for block in text.split("\n\n"):
        if not block:
            continue
        if events is not None and block.startswith("Event: "):
            end = block.find("\n")
            name = block[7:end] if end > 0 else block[7:]
            if "\nActionID: " not in block:
                if name in events:
                    if name in partial:
                        append(_partial(block, name, partial[name]))
                        continue
                elif name != "VarSet" or not _named_variable(block, variables):
                    skipped += 1
                    continue
        lines = block.split("\n")
        try:
            pairs = [line.split(": ", 1) for line in lines]
            headers = dict(pairs)
        except ValueError:
            pass  # a line without ": " (banner, blank, garbage): take the careful path
        else:
            if len(headers) == len(pairs) and "" not in headers:
                append(Frame(headers))
                continue
        frame, bad, seen_banner = _parse_block_slow(lines)
        malformed += bad
        if seen_banner is not None:
            banner = seen_banner
        if frame is not None:
            append(frame)
    return ParseResult(frames, tail, malformed, banner, skipped)


class FrameParser:
    """Incremental AMI parser for one connection: ``feed(bytes) -> list[Frame]``.

    Keeps the unparsed tail between calls. Create one per connection (or call :meth:`reset`
    after a reconnect) so a half-received frame of the old stream never glues onto the new one.
    """

    __slots__ = (
        "_keep",
        "_max_frame_bytes",
        "_tail",
        "banner",
        "dropped_bytes",
        "malformed_lines",
        "skipped_events",
    )

    def __init__(self, max_frame_bytes: int = 1 << 20, keep: EventFilter | None = None) -> None:
        self._max_frame_bytes = max_frame_bytes
        self._keep = keep
        self._tail = b""
        self.banner: str | None = None
        """The ``Asterisk Call Manager/x.y.z`` line, once seen."""
        self.malformed_lines = 0
        """Lines skipped because they were not ``Key: Value`` headers."""
        self.dropped_bytes = 0
        """Bytes thrown away because no frame end came within ``max_frame_bytes``."""
        self.skipped_events = 0
        """Events dropped unparsed (``keep`` does not name them)."""

    @property
    def pending(self) -> int:
        """Number of buffered bytes that do not form a complete frame yet."""
        return len(self._tail)

    def reset(self) -> None:
        """Forget the buffered tail and the banner (use after a reconnect)."""
        self._tail = b""
        self.banner = None

    def feed(self, data: bytes) -> list[Frame]:
        """Add received bytes; return the frames they completed, in order."""
        if not data:
            return []
        result = parse_frames(self._tail + data if self._tail else data, self._keep)
        tail = result.tail
        if len(tail) > self._max_frame_bytes:
            # A peer that never ends a frame must not grow memory without bound.
            self.dropped_bytes += len(tail)
            tail = b""
        self._tail = tail
        if result.malformed_lines:
            self.malformed_lines += result.malformed_lines
        if result.banner is not None:
            self.banner = result.banner
        if result.skipped_events:
            self.skipped_events += result.skipped_events
        return result.frames

    def flush(self) -> list[Frame]:
        """Parse whatever is buffered as if the stream ended with an empty line.

        For a capture file whose last frame lacks the final separator; a live connection
        never needs it.
        """
        if not self._tail.strip():
            self._tail = b""
            return []
        return self.feed(b"\n\n")
