"""The pure AMI frame parser: banner, separators, UTF-8 across reads, garbage."""

import random
import re
from collections import Counter

import pytest

from ami.frames import Frame, FrameParser, parse_frames
from tests.ami._support import FIXTURES, capture_bytes, capture_names, recv_chunks

CAPTURES = capture_names()


def _feed_in_pieces(data: bytes, size: int) -> tuple[list[Frame], FrameParser]:
    parser = FrameParser()
    frames: list[Frame] = []
    for i in range(0, len(data), size):
        frames.extend(parser.feed(data[i : i + size]))
    return frames, parser


def _readme_counts() -> dict[str, tuple[int, Counter[str]]]:
    """``file -> (events, responses)`` from the statistics table of the fixture README."""
    table: dict[str, tuple[int, Counter[str]]] = {}
    readme = (FIXTURES / "README.md").read_text(encoding="utf-8")
    row = re.compile(r"^\| `(?P<file>[^`]+\.ami)` \| \d+ \| (?P<events>\d+) \| (?P<resp>[^|]+) \|")
    for line in readme.splitlines():
        match = row.match(line)
        if match:
            responses: Counter[str] = Counter()
            for part in match["resp"].split(","):
                kind, count = part.split()
                responses[kind] = int(count)
            table[match["file"].removesuffix(".ami")] = (int(match["events"]), responses)
    return table


README_COUNTS = _readme_counts()


def test_readme_table_covers_every_capture() -> None:
    assert sorted(README_COUNTS) == CAPTURES


@pytest.mark.parametrize("name", CAPTURES)
def test_event_and_response_counts_match_the_readme(name: str) -> None:
    parser = FrameParser()
    frames = parser.feed(capture_bytes(name))
    assert parser.pending == 0
    assert parser.malformed_lines == 0
    assert parser.banner == "Asterisk Call Manager/11.0.0"
    events = [f for f in frames if f.event is not None]
    responses = Counter(f.response for f in frames if f.event is None)
    want_events, want_responses = README_COUNTS[name]
    assert len(events) == want_events
    assert responses == want_responses
    assert len(frames) == len(events) + sum(responses.values())


@pytest.mark.parametrize("name", CAPTURES)
def test_chunking_never_changes_the_frames(name: str) -> None:
    data = capture_bytes(name)
    whole = FrameParser().feed(data)
    by_recv: list[Frame] = []
    parser = FrameParser()
    for chunk in recv_chunks(name):
        by_recv.extend(parser.feed(chunk))
    assert by_recv == whole
    if len(data) < 200_000:
        assert _feed_in_pieces(data, 1)[0] == whole
    assert _feed_in_pieces(data, 7)[0] == whole


def test_banner_is_not_a_frame_and_not_malformed() -> None:
    parser = FrameParser()
    frames = parser.feed(
        b"Asterisk Call Manager/11.0.0\r\n"
        b"Response: Success\r\nActionID: 1\r\nMessage: Authentication accepted\r\n\r\n"
    )
    assert parser.banner == "Asterisk Call Manager/11.0.0"
    assert parser.malformed_lines == 0
    assert frames == [
        Frame({"Response": "Success", "ActionID": "1", "Message": "Authentication accepted"})
    ]


def test_banner_arriving_byte_by_byte_then_alone() -> None:
    frames, parser = _feed_in_pieces(b"Asterisk Call Manager/2.10.6\r\n", 1)
    assert frames == []
    assert parser.banner is None  # not complete before the first frame ends
    frames += parser.feed(b"Event: FullyBooted\r\nStatus: Fully Booted\r\n\r\n")
    assert parser.banner == "Asterisk Call Manager/2.10.6"
    assert [f.event for f in frames] == ["FullyBooted"]


def test_cyrillic_split_across_every_byte_boundary() -> None:
    data = (
        "Event: Newchannel\r\nChannel: PJSIP/provider-00000002\r\n"
        "CallerIDName: Иван Петров\r\nUniqueid: 1.2\r\n\r\n"
    ).encode()
    frames, parser = _feed_in_pieces(data, 1)
    assert [f["CallerIDName"] for f in frames] == ["Иван Петров"]
    assert parser.pending == 0
    for cut in range(1, len(data)):
        parser = FrameParser()
        frames = parser.feed(data[:cut]) + parser.feed(data[cut:])
        assert [f.get("CallerIDName") for f in frames] == ["Иван Петров"], cut


def test_invalid_utf8_is_replaced_not_raised() -> None:
    frames = FrameParser().feed(b"Event: X\r\nCallerIDName: \xd0\xd0\xff ok\r\n\r\n")
    assert frames[0]["CallerIDName"] == "\ufffd\ufffd\ufffd ok"


def test_value_may_contain_colon_space() -> None:
    [frame] = FrameParser().feed(b"Event: VarSet\r\nValue: a: b: c\r\nEmpty: \r\n\r\n")
    assert frame["Value"] == "a: b: c"
    assert frame["Empty"] == ""


def test_repeated_headers_first_wins_and_all_are_kept() -> None:
    [frame] = FrameParser().feed(
        b"Action: Originate\r\nVariable: A=1\r\nChannel: PJSIP/101\r\nVariable: B=2\r\n\r\n"
    )
    assert frame["Variable"] == "A=1"
    assert frame.getall("Variable") == ["A=1", "B=2"]
    assert frame.getall("Channel") == ["PJSIP/101"]
    assert frame.getall("Missing") == []
    assert list(frame) == ["Action", "Variable", "Channel"]


def test_garbage_lines_are_skipped_and_counted() -> None:
    parser = FrameParser()
    frames = parser.feed(
        b"Event: Hangup\r\nthis is not a header\r\nUniqueid: 1.1\r\n\x00\x01\r\nCause: 16\r\n\r\n"
        b"just garbage\r\n\r\n"
        b"Event: Newstate\r\nUniqueid: 1.2\r\n\r\n"
    )
    assert [f.event for f in frames] == ["Hangup", "Newstate"]
    assert frames[0].headers == {"Event": "Hangup", "Uniqueid": "1.1", "Cause": "16"}
    assert parser.malformed_lines == 3


def test_random_garbage_never_raises() -> None:
    rng = random.Random(20261126)
    alphabet = b"ab: \r\n\xd0\x98\xff\x00Event"
    for _ in range(300):
        parser = FrameParser()
        blob = bytes(rng.choice(alphabet) for _ in range(rng.randrange(0, 400)))
        pos = 0
        while pos < len(blob):
            step = rng.randrange(1, 40)
            for frame in parser.feed(blob[pos : pos + step]):
                assert isinstance(frame, Frame)
                assert all(isinstance(v, str) for v in frame.headers.values())
            pos += step
        parser.flush()


def test_missing_separator_at_the_end_waits_then_flushes() -> None:
    parser = FrameParser()
    assert parser.feed(b"Event: A\r\nX: 1\r\n\r\nEvent: B\r\nX: 2\r\n") == [
        Frame({"Event": "A", "X": "1"})
    ]
    assert parser.pending > 0
    assert parser.feed(b"Y: 3") == []
    assert parser.flush() == [Frame({"Event": "B", "X": "2", "Y": "3"})]
    assert parser.pending == 0
    assert parser.flush() == []


def test_bare_newline_line_endings_are_tolerated() -> None:
    data = b"Asterisk Call Manager/11.0.0\nResponse: Success\nActionID: 1\n\nEvent: A\nK: v\n\n"
    frames, parser = _feed_in_pieces(data, 3)
    assert [f.headers for f in frames] == [
        {"Response": "Success", "ActionID": "1"},
        {"Event": "A", "K": "v"},
    ]
    assert parser.banner == "Asterisk Call Manager/11.0.0"


def test_crlf_split_between_reads() -> None:
    parser = FrameParser()
    assert parser.feed(b"Event: A\r\nK: v\r\n\r") == []
    assert parser.feed(b"\n") == [Frame({"Event": "A", "K": "v"})]


def test_extra_blank_lines_between_frames() -> None:
    frames = FrameParser().feed(b"\r\n\r\nEvent: A\r\n\r\n\r\n\r\nEvent: B\r\n\r\n")
    assert [f.event for f in frames] == ["A", "B"]


def test_event_with_a_response_header_is_an_event() -> None:
    [frame] = FrameParser().feed(
        b"Event: OriginateResponse\r\nActionID: pbx-51\r\nResponse: Success\r\nReason: 4\r\n\r\n"
    )
    assert frame.event == "OriginateResponse"
    assert frame.response == "Success"


def test_command_output_follows() -> None:
    parser = FrameParser()
    frames = parser.feed(
        b"Response: Follows\r\nPrivilege: Command\r\nActionID: 9\r\n"
        b"Channel              Location\r\n0 active channels\r\n--END COMMAND--\r\n\r\n"
        b"Event: Next\r\n\r\n"
    )
    assert frames[0].response == "Follows"
    assert frames[0].getall("Output") == [
        "Channel              Location",
        "0 active channels",
        "--END COMMAND--",
    ]
    assert frames[1].event == "Next"
    assert parser.malformed_lines == 0


def test_a_frame_that_never_ends_is_dropped_not_hoarded() -> None:
    parser = FrameParser(max_frame_bytes=1000)
    parser.feed(b"Event: Huge\r\nData: " + b"x" * 5000)
    assert parser.pending == 0
    assert parser.dropped_bytes > 5000
    assert parser.feed(b"\r\n\r\nEvent: Ok\r\n\r\n") == [Frame({"Event": "Ok"})]


def test_parse_frames_is_pure_and_returns_the_tail() -> None:
    data = b"Event: A\r\n\r\nEvent: B\r\nK: "
    first = parse_frames(data)
    assert first == parse_frames(data)
    assert [f.event for f in first.frames] == ["A"]
    assert first.tail == b"Event: B\nK: "
    rest = parse_frames(first.tail + "Ж\r\n\r\n".encode())
    assert rest.frames == [Frame({"Event": "B", "K": "Ж"})]
    assert rest.tail == b""


def test_reset_forgets_a_half_frame() -> None:
    parser = FrameParser()
    parser.feed(b"Asterisk Call Manager/11.0.0\r\nEvent: Half")
    parser.reset()
    assert parser.pending == 0
    assert parser.feed(b"Event: New\r\n\r\n") == [Frame({"Event": "New"})]
