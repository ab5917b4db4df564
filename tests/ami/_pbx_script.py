"""Build AMI event sequences the way Asterisk 22 emits them, for scenarios with no capture.

Only the headers the fold could look at are written, with the same names and shapes as in
the real captures (see tests/fixtures/ami/*.ami).
"""

from dataclasses import dataclass
from itertools import count

from ami.frames import Frame

T0 = 1_795_800_000.0

_STATE_DESC = {0: "Down", 4: "Ring", 5: "Ringing", 6: "Up"}


@dataclass
class Chan:
    """One Asterisk channel: name, Uniqueid, Linkedid and caller id."""

    name: str
    uid: str
    lid: str
    state: int = 0
    cid: str = "<unknown>"
    cidname: str = "<unknown>"
    context: str = "internal"
    exten: str = "s"

    def headers(self, prefix: str = "") -> dict[str, str]:
        return {
            f"{prefix}Channel": self.name,
            f"{prefix}ChannelState": str(self.state),
            f"{prefix}ChannelStateDesc": _STATE_DESC.get(self.state, "Unknown"),
            f"{prefix}CallerIDNum": self.cid,
            f"{prefix}CallerIDName": self.cidname,
            f"{prefix}Context": self.context,
            f"{prefix}Exten": self.exten,
            f"{prefix}Uniqueid": self.uid,
            f"{prefix}Linkedid": self.lid,
        }


class Script:
    """Appends frames with strictly increasing ``Timestamp`` headers."""

    def __init__(self, start: float = T0) -> None:
        self.now = start
        self.frames: list[Frame] = []
        self._ids = count(1)
        self._chan_ids = count(0x40)

    def wait(self, seconds: float) -> None:
        self.now += seconds

    def uid(self) -> str:
        return f"{int(T0)}.{next(self._ids)}"

    def emit(
        self, event: str, chan: Chan | None = None, dest: Chan | None = None, /, **extra: str
    ) -> Frame:
        headers = {"Event": event, "Privilege": "call,all", "Timestamp": f"{self.now:.6f}"}
        if chan is not None:
            headers.update(chan.headers())
        if dest is not None:
            headers.update(dest.headers("Dest"))
        headers.update(extra)
        self.now += 0.000137
        frame = Frame(headers)
        self.frames.append(frame)
        return frame

    # -- channels -------------------------------------------------------------------

    def channel(
        self,
        endpoint: str,
        *,
        linked_to: Chan | None = None,
        state: int = 0,
        cid: str | None = None,
        cidname: str = "<unknown>",
        context: str = "internal",
        exten: str = "s",
    ) -> Chan:
        """``Newchannel`` of ``PJSIP/<endpoint>-…`` (or a full ``Local/…`` base name)."""
        uid = self.uid()
        if endpoint.startswith("Local/"):
            name = f"{endpoint}-{next(self._chan_ids):08x}"
        else:
            name = f"PJSIP/{endpoint}-{next(self._chan_ids):08x}"
        chan = Chan(
            name=name,
            uid=uid,
            lid=linked_to.lid if linked_to is not None else uid,
            state=state,
            cid=cid if cid is not None else endpoint,
            cidname=cidname,
            context=context,
            exten=exten,
        )
        self.emit("Newchannel", chan)
        return chan

    def local_pair(self, base: str, linked_to: Chan | None = None) -> tuple[Chan, Chan]:
        """``Local/<base>-XXXXXXXX;1`` and ``;2`` (both Down), as ast_request("Local") makes."""
        suffix = f"{next(self._chan_ids):08x}"
        one_uid = self.uid()
        lid = linked_to.lid if linked_to is not None else one_uid
        one = Chan(f"Local/{base}-{suffix};1", one_uid, lid)
        two = Chan(f"Local/{base}-{suffix};2", self.uid(), lid)
        self.emit("Newchannel", one)
        self.emit("Newchannel", two)
        return one, two

    def state(self, chan: Chan, state: int) -> None:
        chan.state = state
        self.emit("Newstate", chan)

    def hangup(self, chan: Chan, cause: int = 16, request: bool = False) -> None:
        if request:
            self.emit("HangupRequest", chan, Cause=str(cause))
        self.emit("Hangup", chan, Cause=str(cause), **{"Cause-txt": "Normal Clearing"})

    def varset(self, chan: Chan, variable: str, value: str) -> None:
        self.emit("VarSet", chan, Variable=variable, Value=value)

    # -- dialing and bridging ---------------------------------------------------------

    def dial_begin(self, src: Chan | None, dest: Chan, dialstring: str) -> None:
        self.emit("DialBegin", src, dest, DialString=dialstring)

    def dial_end(self, src: Chan | None, dest: Chan, status: str) -> None:
        self.emit("DialEnd", src, dest, DialStatus=status)

    def enter(self, bridge: str, chan: Chan) -> Frame:
        return self.emit("BridgeEnter", None, None, BridgeUniqueid=bridge, **chan.headers())

    def leave(self, bridge: str, chan: Chan) -> None:
        self.emit("BridgeLeave", None, None, BridgeUniqueid=bridge, **chan.headers())

    def optimize_local(self, one: Chan, two: Chan, outer: str, inner: str, phone: Chan) -> None:
        """Local channel optimisation: ``phone`` replaces ``one`` in ``outer``; both halves go."""
        self.emit("LocalOptimizationBegin", None, None, **one.headers("LocalOne"))
        self.leave(outer, one)
        self.enter(outer, phone)
        self.leave(inner, phone)
        self.leave(inner, two)
        self.emit("LocalOptimizationEnd", None, None, **one.headers("LocalOne"))
        self.hangup(one)
        self.hangup(two)
