"""Every message on the wire: one frozen dataclass per type, decoded through one registry.

A frame holds a map whose key ``t`` names the type; the other keys are the dataclass
fields. Decoding checks the tag against the registry and every field against its declared
type, so the rest of the program only ever sees well-formed messages.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from typing import Any, ClassVar, TypeVar, Union, get_args, get_origin

from common.errors import ErrorCode, ProtocolError
from common.text import quoted

TYPE_KEY = "t"
_NODE_ID = re.compile(r"[!-~]{1,64}")

_REGISTRY: dict[str, type[Message]] = {}
_SCHEMAS: dict[type, _Schema] = {}

M = TypeVar("M", bound="Message")


@dataclasses.dataclass(frozen=True)
class Message:
    TAG: ClassVar[str] = ""

    def to_wire(self) -> dict[str, Any]:
        cls = type(self)
        if _holds_messages(cls):
            wire = {name: _plain(getattr(self, name)) for name in _field_names(cls)}
        else:  # a frozen dataclass's __dict__ holds its fields and nothing else: one copy
            wire = dict(self.__dict__)
        wire[TYPE_KEY] = self.TAG
        return wire

    def problem(self) -> str | None:
        """What is wrong with a decoded message beyond its field types (None: nothing).

        Types whose fields have rules of their own (ranges, lengths, enum values) override
        this; ``decode`` calls it, so a peer's bad value never reaches the program."""
        return None


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def _field_names(cls: type) -> tuple[str, ...]:
    """A message type's field names, looked up once (``dataclasses.fields`` builds its
    answer anew at every call, and every frame sent asked)."""
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = tuple(f.name for f in dataclasses.fields(cls))
    return names


_HOLDS_MESSAGES: dict[type, bool] = {}


def _holds_messages(cls: type) -> bool:
    """Whether a field of ``cls`` may hold a nested message (or anything at all), which
    ``to_wire`` must turn into a map; looked up once per type (every frame sent asks)."""
    holds = _HOLDS_MESSAGES.get(cls)
    if holds is None:
        hints = typing.get_type_hints(cls)
        holds = _HOLDS_MESSAGES[cls] = any(
            _may_hold_message(hints[name]) for name in _field_names(cls))
    return holds


def _may_hold_message(hint: Any) -> bool:
    if hint is Any or (isinstance(hint, type) and issubclass(hint, Message)):
        return True
    return any(_may_hold_message(arg) for arg in get_args(hint))


def _plain(value: Any) -> Any:
    """Nested messages (a reply's results) go on the wire as maps."""
    if isinstance(value, Message):
        return value.to_wire()
    if type(value) is list and value and isinstance(value[0], Message):
        return [_plain(item) for item in value]
    return value


def register(cls: type[M]) -> type[M]:
    """Class decorator: enter a message dataclass in the registry under its TAG."""
    if not cls.TAG or cls.TAG in _REGISTRY:
        raise ValueError(f"message tag {cls.TAG!r} missing or registered twice")
    _REGISTRY[cls.TAG] = cls
    return cls


class _Mismatch(Exception):
    """A value does not fit its declared type; the message says where."""


Converter = typing.Callable[[Any], Any]


def _identity_if(test: typing.Callable[[Any], bool]) -> Converter:
    def convert(value: Any) -> Any:
        if not test(value):
            raise _Mismatch("has the wrong type")
        return value
    return convert


def _finite_number(value: Any) -> Any:
    # One call per field: these run for every field of every frame received.
    kind = type(value)
    if kind is int or (kind is float and math.isfinite(value)):
        return value
    raise _Mismatch("has the wrong type")


def _exactly(kind: type) -> Converter:
    def convert(value: Any) -> Any:
        if type(value) is not kind:
            raise _Mismatch("has the wrong type")
        return value
    return convert


def _converter(hint: Any) -> Converter:
    """Build, once per field type, a function that checks a wire value against the type and
    returns it as the program uses it (nested messages become their dataclasses)."""
    origin = get_origin(hint)
    if hint is Any:
        return lambda value: value
    if origin in (Union, types.UnionType):
        arms = [_converter(arm) for arm in get_args(hint)]

        def either(value: Any) -> Any:
            for arm in arms:
                try:
                    return arm(value)
                except _Mismatch:
                    continue
            raise _Mismatch("has the wrong type")
        return either
    if hint is type(None):
        return _identity_if(lambda value: value is None)
    if hint is float:  # NaN and infinities are never meaningful here
        return _finite_number
    if hint is int:
        return _exactly(int)
    if hint is bool:
        return _exactly(bool)
    if origin is list:
        item = _converter((get_args(hint) or (Any,))[0])

        def each(value: Any) -> Any:
            if type(value) is not list:
                raise _Mismatch("has the wrong type")
            return [item(v) for v in value]
        return each
    if origin is dict:
        key_hint, item_hint = get_args(hint) or (Any, Any)
        key, item = _converter(key_hint), _converter(item_hint)

        def mapping(value: Any) -> Any:
            if type(value) is not dict:
                raise _Mismatch("has the wrong type")
            return {key(k): item(v) for k, v in value.items()}
        return mapping
    if isinstance(hint, type) and issubclass(hint, Message):
        def nested(value: Any) -> Any:
            if type(value) is not dict:
                raise _Mismatch(f"is not a {hint.TAG} map")
            tag = value.get(TYPE_KEY, hint.TAG)
            if tag != hint.TAG:
                raise _Mismatch(f"is a {quoted(tag)}, not a {hint.TAG!r}")
            try:
                return _build(hint, value)
            except ProtocolError as exc:
                raise _Mismatch(f"({exc.message})") from None
        return nested
    if isinstance(hint, type):
        return _identity_if(lambda value: isinstance(value, hint))
    raise TypeError(f"unsupported field type {hint!r}")


@dataclasses.dataclass(frozen=True)
class _Schema:
    converters: dict[str, Converter]
    required: frozenset[str]


def _schema(cls: type) -> _Schema:
    schema = _SCHEMAS.get(cls)
    if schema is None:
        hints = typing.get_type_hints(cls)
        fields = dataclasses.fields(cls)
        schema = _Schema(
            converters={f.name: _converter(hints[f.name]) for f in fields},
            required=frozenset(
                f.name for f in fields
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            ),
        )
        _SCHEMAS[cls] = schema
    return schema


def _build(cls: type[M], wire: dict[str, Any]) -> M:
    tag = cls.TAG
    schema = _schema(cls)
    converters = schema.converters
    values = {}
    for name, value in wire.items():
        if name == TYPE_KEY:
            continue
        convert = converters.get(name)
        if convert is None:
            raise ProtocolError(f"{tag}: unexpected field {quoted(name)}")
        try:
            values[name] = convert(value)
        except _Mismatch as exc:
            raise ProtocolError(f"{tag}: field {name!r} {exc}") from None
    missing = schema.required - values.keys()
    if missing:
        raise ProtocolError(f"{tag}: missing field {sorted(missing)[0]!r}")
    message = cls(**values)
    problem = message.problem()
    if problem is not None:
        raise ProtocolError(f"{tag}: {problem}")
    return message


def decode(wire: dict[str, Any]) -> Message:
    """Turn a decoded frame map into its message, or raise ProtocolError saying why."""
    tag = wire.get(TYPE_KEY)
    if not isinstance(tag, str):
        raise ProtocolError("message has no type tag")
    cls = _REGISTRY.get(tag)
    if cls is None:
        raise ProtocolError(f"unknown message type {quoted(tag)}")
    if cls is Heartbeat and (beat := _well_formed_heartbeat(wire)) is not None:
        return beat
    return _build(cls, wire)


def decode_as(hint: Any, value: Any) -> Any:
    """Check a reply's value against the type its request promises (``REPLY``), building
    nested messages; ProtocolError says what did not fit."""
    try:
        return _converter_for(hint)(value)
    except _Mismatch as exc:
        raise ProtocolError(f"reply {exc}") from None


_REPLY_CONVERTERS: dict[Any, Converter] = {}


def _converter_for(hint: Any) -> Converter:
    convert = _REPLY_CONVERTERS.get(hint)
    if convert is None:
        convert = _REPLY_CONVERTERS[hint] = _converter(hint)
    return convert


# --- handshake -----------------------------------------------------------------------------


# The longest a master may say it stays silent between pings (a day): past that a client's
# warning about a silent master would never come.
MAX_PING_GAP = 86400.0

@register
@dataclasses.dataclass(frozen=True)
class Hello(Message):
    """master -> client, first frame on a connection."""

    TAG: ClassVar[str] = "hello"

    version: int
    nonce: bytes


@register
@dataclasses.dataclass(frozen=True)
class Register(Message):
    """client -> master: who I am, and proof that I hold the token."""

    TAG: ClassVar[str] = "register"

    version: int
    node_id: str
    name: str
    host: str
    nonce: bytes
    mac: bytes
    pid: int = 0
    # The client's kernel tells it whether the master's host acknowledges what it sends
    # (Linux TCP_INFO), so it needs no keep-alives between round-trip pings. A hint, not
    # a claim: flipping it can only cost the client keep-alives.
    watches_link: bool = False

    def problem(self) -> str | None:
        if not _NODE_ID.fullmatch(self.node_id):
            return "node_id must be 1 to 64 printable ASCII characters without spaces"
        if len(self.host) > 255:
            return "host name longer than 255 characters"
        return None


@register
@dataclasses.dataclass(frozen=True)
class Welcome(Message):
    """master -> client: proof that the master holds the token, and session settings."""

    TAG: ClassVar[str] = "welcome"

    mac: bytes
    heartbeat: float


@register
@dataclasses.dataclass(frozen=True)
class ErrorFrame(Message):
    """Either side: the connection is being closed for this reason."""

    TAG: ClassVar[str] = "error"

    code: int
    message: str


# --- after the handshake --------------------------------------------------------------------


@register
@dataclasses.dataclass(frozen=True)
class Heartbeat(Message):
    """client -> master, every heartbeat interval."""

    TAG: ClassVar[str] = "hb"

    seq: int
    load: list[float]
    cpu_percent: float
    mem_available: int
    mem_total: int
    disk_free: int
    processes: int

    def problem(self) -> str | None:
        if len(self.load) != 3:
            return f"load has {len(self.load)} values, not 3"
        if min(self.seq, *self.load, self.cpu_percent, self.mem_available, self.mem_total,
               self.disk_free, self.processes) < 0:  # every heartbeat: one call, no list
            return "a figure is negative"
        return None


def heartbeat_is_well_formed(wire: dict[str, Any]) -> bool:
    """Whether ``wire`` is a heartbeat map that ``decode`` accepts; for anything else
    ``decode`` gives the reason.

    A master of 10,000 nodes reads 10,000 heartbeats a second. The general decoder took
    2.8 µs for one (a converter call and a dict entry per field, a set of the fields
    present, ``problem``); these straight checks of the same rules take 0.4 µs, and the
    master keeps the checked map as it is (``NodeRegistry.heartbeat``), with no message
    object made for it. A comparison ``0 <= x < inf`` is false for NaN, infinities and
    negative figures alike."""
    if len(wire) != 8 or wire.get(TYPE_KEY) != Heartbeat.TAG:  # the tag and seven fields
        return False
    try:
        seq, load, cpu_percent = wire["seq"], wire["load"], wire["cpu_percent"]
        mem_available, mem_total = wire["mem_available"], wire["mem_total"]
        disk_free, processes = wire["disk_free"], wire["processes"]
    except KeyError:
        return False
    if not (type(seq) is int and type(mem_available) is int and type(mem_total) is int
            and type(disk_free) is int and type(processes) is int
            and type(load) is list and len(load) == 3):
        return False
    for figure in (cpu_percent, load[0], load[1], load[2]):
        kind = type(figure)
        if not ((kind is float or kind is int) and 0 <= figure < math.inf):
            return False
    return (seq >= 0 and mem_available >= 0 and mem_total >= 0 and disk_free >= 0
            and processes >= 0)


def _well_formed_heartbeat(wire: dict[str, Any]) -> Heartbeat | None:
    """The heartbeat, if ``wire`` is one that ``_build`` accepts; None for anything else,
    which ``_build`` then refuses with its reason."""
    if not heartbeat_is_well_formed(wire):
        return None
    return Heartbeat(wire["seq"], wire["load"], wire["cpu_percent"], wire["mem_available"],
                     wire["mem_total"], wire["disk_free"], wire["processes"])


@register
@dataclasses.dataclass(frozen=True)
class Reply(Message):
    """client -> master: the result of request ``req``."""

    TAG: ClassVar[str] = "reply"

    req: int
    value: Any = None


@register
@dataclasses.dataclass(frozen=True)
class FailReply(Message):
    """client -> master: request ``req`` failed."""

    TAG: ClassVar[str] = "fail"

    req: int
    code: int
    message: str


@register
@dataclasses.dataclass(frozen=True)
class Ping(Message):
    """master -> client request; the reply measures round-trip time. ``next_in``: to a
    client that watches the link itself, the seconds until the next ping at the latest
    (nothing else may come in between); 0 when keep-alives come every few intervals."""

    TAG: ClassVar[str] = "ping"

    req: int
    next_in: float = 0.0

    def problem(self) -> str | None:
        if not 0.0 <= self.next_in <= MAX_PING_GAP:
            return f"next_in must be 0 to {MAX_PING_GAP:.0f} seconds"
        return None


@register
@dataclasses.dataclass(frozen=True)
class ExecRequest(Message):
    """Start ``count`` copies of a program; one ``proc`` per copy (a failed spawn is one
    too, in state ``spawn failed``, with ``error``). With ``job``, copy i is the process of
    rank ``rank + i`` of a job of ``size``: the client sets its CORRAL_NODE, CORRAL_JOB,
    CORRAL_RANK, CORRAL_SIZE and CORRAL_REF last (``env`` may not name them) and replaces
    ``?HOST`` and ``?RANK`` in ``argv`` (``??HOST``: a literal ``?HOST``)."""

    TAG: ClassVar[str] = "exec"

    req: int
    argv: list[str]
    cwd: str | None = None  # relative to the client's work folder
    env: dict[str, str] = dataclasses.field(default_factory=dict)
    stdin: bytes | None = None  # the contents the process reads on stdin
    count: int = 1
    # The job the copies belong to (none: an older master): the client sets each copy's
    # CORRAL_* variables, ranks rank, rank + 1, ... of size, and replaces ?HOST and ?RANK
    # in argv.
    job: str = ""
    rank: int = 0
    size: int = 0

    def problem(self) -> str | None:
        return job_place_problem(self.job, self.rank, self.size, self.count)


@register
@dataclasses.dataclass(frozen=True)
class ListRequest(Message):
    """Reap, then list every process this client started, oldest first."""

    TAG: ClassVar[str] = "ps"

    req: int


@register
@dataclasses.dataclass(frozen=True)
class SignalRequest(Message):
    """Signal processes this client started (every running one with ``all_running``);
    one answer per pid."""

    TAG: ClassVar[str] = "signal"

    req: int
    signum: int
    pids: list[int] = dataclasses.field(default_factory=list)
    all_running: bool = False


@register
@dataclasses.dataclass(frozen=True)
class ForgetRequest(Message):
    """Drop ended processes from the client's table and journal: ``pids``, or every ended
    one with ``all_ended``. Reply: a list of ``ForgetAnswer``, one per pid."""

    TAG: ClassVar[str] = "forget"

    req: int
    pids: list[int] = dataclasses.field(default_factory=list)
    all_ended: bool = False


@register
@dataclasses.dataclass(frozen=True)
class UsageRequest(Message):
    """Resource usage: the client's RUSAGE_CHILDREN and its process table."""

    TAG: ClassVar[str] = "rusage"

    req: int


@register
@dataclasses.dataclass(frozen=True)
class LogRequest(Message):
    """Read a chunk of a process's log: up to ``max_bytes`` from byte ``offset`` on, or,
    without an offset, from where its last ``lines`` lines begin (nil or 0: the start)."""

    TAG: ClassVar[str] = "log"

    req: int
    pid: int
    lines: int | None = None
    offset: int | None = None
    max_bytes: int = 256 * 1024


@register
@dataclasses.dataclass(frozen=True)
class RunRequest(Message):
    """Run ``/bin/sh -c command`` (or, with an allow-list, the simple command without a
    shell) and answer with how it ended and its output. ``env``, ``job``, ``rank`` and
    ``size`` as for ``exec`` (one process)."""

    TAG: ClassVar[str] = "run"

    req: int
    command: str
    timeout: float
    cwd: str | None = None
    env: dict[str, str] = dataclasses.field(default_factory=dict)
    job: str = ""  # as for ``exec``, one copy
    rank: int = 0
    size: int = 0

    def problem(self) -> str | None:
        return job_place_problem(self.job, self.rank, self.size, 1)


@register
@dataclasses.dataclass(frozen=True)
class Ack(Message):
    """master -> client: every event up to ``eseq`` of client run ``boot`` arrived; stop
    resending them. Cumulative, and sent a little after the event (0.1 s: a burst of
    events, or a fan-out, costs one ack, sent once it is over). With an empty ``boot`` it
    acknowledges nothing: the master's keep-alive between round-trip pings."""

    TAG: ClassVar[str] = "ack"

    boot: str
    eseq: int


# --- files ---------------------------------------------------------------------------------
# A push is one PutBegin request for the whole copy, then PutEntry frames (each file, folder
# or link in order; a file's first bytes ride in its entry), PutChunk frames for the rest of
# a file's bytes, and one PutEnd, all sent without waiting. The client writes every file to
# a temporary file, and at PutEnd syncs once, renames them all into place and answers the
# PutBegin's req; at its first error it answers at once, discards what it wrote, and drops
# the rest of that req's frames. TCP is the back-pressure.


@register
@dataclasses.dataclass(frozen=True)
class PutBegin(Message):
    """Start a copy to ``dest`` (relative to the work folder). With ``into``, or when
    ``dest`` is an existing folder, each entry lands inside ``dest`` under its own path;
    otherwise the one source becomes ``dest`` (``cp``'s rules). Answered once, after
    ``pute``, or at the first error."""

    TAG: ClassVar[str] = "put"

    req: int
    dest: str
    into: bool
    # A chained copy (docs/chain-design.md): its id; the node whose data link feeds this
    # node ("" for the master); and the node this one forwards every frame to, if any.
    transfer: str = ""
    upstream: str = ""
    downstream: NextHop | None = None
    stall: float = 0.0  # seconds the next node may accept nothing before it is cut out
    clock: float = 0.0  # the master's time (Unix) when it sent this: tickets expire by it

    def problem(self) -> str | None:
        return None if self.stall >= 0 else "negative stall time"


@register
@dataclasses.dataclass(frozen=True)
class LinkTicket(Message):
    """The master's one-time permission for ``sender`` to open a data link to ``receiver``
    for chained copy ``transfer`` (see ``common.tickets``). Travels to the sender inside its
    ``put``, and from the sender to the receiver as the first frame of the link."""

    TAG: ClassVar[str] = "ticket"

    transfer: str
    sender: str
    receiver: str
    expires: float
    nonce: str
    mac: bytes


@register
@dataclasses.dataclass(frozen=True)
class NextHop(Message):
    """Where a node forwards a chained copy: the next node's data port, and its ticket."""

    TAG: ClassVar[str] = "hop"

    host: str
    port: int
    ticket: LinkTicket

    def problem(self) -> str | None:
        return None if 0 < self.port < 65536 else f"port {self.port} out of range"


@register
@dataclasses.dataclass(frozen=True)
class LinkWelcome(Message):
    """receiver -> sender on a data link: the ticket is admitted; both sides now MAC every
    frame with keys made from the token, the ticket's nonce and this one."""

    TAG: ClassVar[str] = "lwelcome"

    nonce: bytes


@register
@dataclasses.dataclass(frozen=True)
class DataPort(Message):
    """client -> master, right after the handshake: the port its data links are accepted
    on, for chained copies."""

    TAG: ClassVar[str] = "dport"

    port: int

    def problem(self) -> str | None:
        return None if 0 < self.port < 65536 else f"port {self.port} out of range"


@register
@dataclasses.dataclass(frozen=True)
class PutProgress(Message):
    """client -> master, a few times a second during a chained copy: bytes of push
    ``req`` written so far (the progress line shows the slowest node)."""

    TAG: ClassVar[str] = "putp"

    req: int
    received: int


@register
@dataclasses.dataclass(frozen=True)
class LinkLost(Message):
    """client -> master: forwarding push ``req`` to ``node`` failed or stalled; this node
    carries on without it, and the master re-forms the chain after it."""

    TAG: ClassVar[str] = "llost"

    req: int
    node: str
    reason: str


@register
@dataclasses.dataclass(frozen=True)
class PutEntry(Message):
    """The next entry of push ``req``: ``relpath`` starts with the source's own name;
    ``kind`` is ``file``, ``dir`` or ``link`` (``target`` is then the link's text). A file's
    first bytes (at most 1 MiB) come in ``data``, the rest in ``putc`` frames."""

    TAG: ClassVar[str] = "putf"

    req: int
    relpath: str
    kind: str
    mode: int
    size: int
    data: bytes = b""
    target: str = ""

    def problem(self) -> str | None:
        return entry_problem(self.kind, self.mode, self.size, self.target)


@register
@dataclasses.dataclass(frozen=True)
class PutChunk(Message):
    """The next bytes (at most 1 MiB) of the file being pushed by request ``req``."""

    TAG: ClassVar[str] = "putc"

    req: int
    data: bytes


@register
@dataclasses.dataclass(frozen=True)
class PutEnd(Message):
    """The end of push ``req``: the client checks the last file's size, syncs everything
    to disk once, renames it all into place, and answers."""

    TAG: ClassVar[str] = "pute"

    req: int
    digest: bytes = b""  # chained copies: the master's SHA-256 of the stream (StreamDigest)


@register
@dataclasses.dataclass(frozen=True)
class GetRequest(Message):
    """Send ``path`` (a file, or a folder and everything in it) back as GetFile, GetChunk and
    GetFileEnd frames with this req, then reply with the counts. With ``follow``, links
    inside the folder are followed (``-L``); without it they travel as links."""

    TAG: ClassVar[str] = "get"

    req: int
    path: str
    follow: bool = False


@register
@dataclasses.dataclass(frozen=True)
class GetFile(Message):
    """client -> master: the next file, folder or link of a get; ``relpath`` is relative to
    the requested path's parent, so a folder keeps its own name; ``target`` is a link's
    text. A file's bytes follow as ``getc`` frames and a ``gete``."""

    TAG: ClassVar[str] = "getf"

    req: int
    relpath: str
    kind: str
    mode: int
    size: int
    target: str = ""

    def problem(self) -> str | None:
        return entry_problem(self.kind, self.mode, self.size, self.target)


@register
@dataclasses.dataclass(frozen=True)
class GetChunk(Message):
    """The next bytes of the file being sent for get ``req``."""

    TAG: ClassVar[str] = "getc"

    req: int
    data: bytes


@register
@dataclasses.dataclass(frozen=True)
class GetFileEnd(Message):
    """The end of that file: the master checks its size, and lands it."""

    TAG: ClassVar[str] = "gete"

    req: int


@register
@dataclasses.dataclass(frozen=True)
class RemoveRequest(Message):
    """Remove paths (folders only with ``recursive``); one answer per path."""

    TAG: ClassVar[str] = "rm"

    req: int
    paths: list[str]
    recursive: bool = False


@register
@dataclasses.dataclass(frozen=True)
class Cancel(Message):
    """master -> client: stop working on request ``req`` (no reply is expected)."""

    TAG: ClassVar[str] = "cancel"

    req: int



def job_place_problem(job: str, rank: int, size: int, count: int) -> str | None:
    """A job's copies on one node must fit in it: ranks rank .. rank + count - 1 < size."""
    if not job:
        return None
    if len(job) > 32 or not job.isprintable():
        return "bad job name"
    if rank < 0 or size < 1 or rank + max(count, 1) > size:
        return f"ranks {rank}..{rank + count - 1} do not fit a job of {size}"
    return None


def entry_problem(kind: str, mode: int, size: int, target: str = "") -> str | None:
    """The rules for an entry of a transfer, shared by both directions."""
    if kind not in ("file", "dir", "link"):
        return f"kind {quoted(kind)} is not 'file', 'dir' or 'link'"
    if (kind == "link") != bool(target):
        return "a link needs a target, and only a link has one"
    if not 0 <= mode <= 0o7777:
        return f"mode {mode:#o} out of range"
    if size < 0:
        return "negative size"
    return None


def error_code(value: int) -> ErrorCode:
    try:
        return ErrorCode(value)
    except ValueError:
        return ErrorCode.INTERNAL
