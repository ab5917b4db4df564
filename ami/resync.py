"""Resynchronise the call fold with the PBX after a (re)connect.

Events sent while the link was down are gone. What the PBX still knows is its live state:
``CoreShowChannels`` (or ``Status``) lists every channel, ``QueueStatus`` every caller
waiting in a queue (``QueueEntry``). Feeding those list items to the fold creates the calls
that began during the outage; :meth:`~ami.fold.CallFolder.reconcile` ends the ones whose
channels are no longer listed. The fold never records a finished call twice, so a listing
that races with a live ``Hangup`` is harmless.

``Status`` is the default channel list: unlike ``CoreShowChannels`` it carries ``DNID``,
the number the caller dialled. A call that began during the outage may have left its DID
extension already (an IVR ``Goto``, a transfer), so the ``Exten`` of either list can be
anything by then; :func:`for_fold` hands the fold the DNID in its place.

The helpers below are pure (frames in, frames or sets out); :func:`resync_calls` only
sequences the actions through whatever sends them (an :class:`~ami.connection.AmiLink`).
"""

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Literal, Protocol

from ami.fold import CallEvent, CallFolder
from ami.frames import Frame

__all__ = [
    "CHANNEL_LIST_EVENTS",
    "ChannelsAction",
    "ListSender",
    "channel_uniqueids",
    "for_fold",
    "linkedids",
    "queue_entries",
    "resync_calls",
]

log = logging.getLogger(__name__)

CHANNEL_LIST_EVENTS = frozenset({"CoreShowChannel", "Status"})
"""List items that describe one live channel each."""

ChannelsAction = Literal["Status", "CoreShowChannels"]


class ListSender(Protocol):
    """Anything that sends an AMI action answered by an event list (an ``AmiLink``)."""

    name: str

    async def send_action_list(self, action: Mapping[str, str], timeout: float) -> list[Frame]: ...


def channel_uniqueids(frames: Iterable[Frame]) -> set[str]:
    """Uniqueids of the channels a ``CoreShowChannels``/``Status`` list reports as live."""
    found: set[str] = set()
    for frame in frames:
        if frame.headers.get("Event") in CHANNEL_LIST_EVENTS:
            uid = (frame.headers.get("Uniqueid") or "").strip()
            if uid:
                found.add(uid)
    return found


def linkedids(frames: Iterable[Frame]) -> set[str]:
    """Linkedids (calls) of the channels in a ``CoreShowChannels``/``Status`` list."""
    found: set[str] = set()
    for frame in frames:
        if frame.headers.get("Event") in CHANNEL_LIST_EVENTS:
            lid = (frame.headers.get("Linkedid") or "").strip()
            if lid:
                found.add(lid)
    return found


def for_fold(frames: Iterable[Frame]) -> list[Frame]:
    """Channel list items as the fold should read them: a ``Status`` item's ``Exten`` is
    replaced by its ``DNID`` when there is one, since the fold takes the DID of a channel it
    first meets in a list from ``Exten``. Other frames pass unchanged."""
    out: list[Frame] = []
    for frame in frames:
        dnid = (frame.headers.get("DNID") or "").strip()
        if dnid and frame.headers.get("Event") == "Status" and frame.headers.get("Exten") != dnid:
            frame = Frame({**frame.headers, "Exten": dnid})
        out.append(frame)
    return out


def queue_entries(frames: Iterable[Frame]) -> list[Frame]:
    """The ``QueueEntry`` items (callers waiting in a queue) of a ``QueueStatus`` list."""
    return [f for f in frames if f.headers.get("Event") == "QueueEntry"]


async def resync_calls(
    link: ListSender,
    folder: CallFolder,
    *,
    feed: Callable[[Frame], object],
    now: Callable[[], float],
    queues: bool = False,
    channels_action: ChannelsAction = "Status",
    timeout: float = 10.0,
) -> list[CallEvent]:
    """Ask the PBX for its live channels (and queue callers) and reconcile ``folder``.

    ``channels_action`` lists the channels (``Status`` by default, see the module doc);
    ``queues`` also asks ``QueueStatus`` so callers waiting in a queue keep their queue.

    ``feed(frame)`` must fold a frame the same way live events are folded (the fold's
    ``feed`` or a service wrapper around it that also publishes the events it returns).
    Returns the :class:`~ami.fold.CallEnded` events of the calls that ended during the
    outage; the caller publishes them. ``now()`` is the time those calls are ended at.
    Raises whatever ``send_action_list`` raises (``AmiUnavailable`` … ): a failed resync
    must be retried, not half-applied.
    """
    # Channels first seen after this point came in live while the list was being built.
    marker = folder.resync_marker()
    channels = for_fold(await link.send_action_list({"Action": channels_action}, timeout))
    waiting: list[Frame] = []
    if queues:
        waiting = queue_entries(await link.send_action_list({"Action": "QueueStatus"}, timeout))
    # Both lists read, then fed at once (live events keep arriving, the older a listing the
    # staler): the queue callers' own channels first, then their queue entries, then the
    # rest, so a phone ringing for a queue caller pops up naming the queue.
    in_queue = {frame.headers.get("Uniqueid") for frame in waiting}
    callers = [f for f in channels if f.headers.get("Uniqueid") in in_queue]
    for frame in callers:
        feed(frame)
    for frame in waiting:
        feed(frame)
    for frame in channels:
        if frame.headers.get("Uniqueid") not in in_queue:
            feed(frame)
    active = channel_uniqueids(channels)
    ended = folder.reconcile(active, now(), since=marker)
    log.info(
        "pbx=%s resync: %d live channel(s) in %d call(s), %d queue caller(s), %d call(s) "
        "ended during the outage",
        link.name,
        len(active),
        len(linkedids(channels)),
        len(waiting),
        len(ended),
    )
    return ended
