"""Length-prefixed msgpack frames: a 4-byte big-endian length, then one msgpack map, and
after the handshake a MAC (``common.frame_auth``) at the end of every frame.

Works on any socket-like object with ``recv_into`` and ``sendall`` (stdlib or gevent), so
the master, the client and a third-party client share the same code.
"""

from __future__ import annotations

import struct
from typing import Any, Protocol

import msgpack

from common.errors import ConnectionClosed, FrameTooLarge, ProtocolError
from common.frame_auth import TAG_BYTES, FrameMac

HEADER = struct.Struct(">I")
_BIN32 = struct.Struct(">BI")  # msgpack's bin 32: a byte string of up to 4 GiB
_PACKER = msgpack.Packer(use_bin_type=True)
# A byte string at least this long is sent from where it lies (``FrameWriter.frame_parts``);
# below it, copying it into the packed body costs less than a buffer of its own.
BULK = 64 * 1024  # from 64 KiB on, msgpack too writes a byte string as bin 32
DEFAULT_MAX_FRAME = 8 * 1024 * 1024
# Thousands of idle sessions must stay cheap: a heartbeat frame is about 130 bytes, and a
# buffer grown for a big frame (a file or log chunk) goes back to this size after it.
_INITIAL_BUFFER = 512
# A buffer grown up to this size is kept for the next frames; a bigger one is given back
# once the frames are small again (``FrameReader._fill``).
_KEEP_GROWN = 64 * 1024
# Before the handshake anyone can connect: its frames (hello, register, welcome, a refusal)
# are a few hundred bytes, and a peer not yet authenticated must not make us read, hold or
# decode megabytes per connection.
HANDSHAKE_MAX_FRAME = 64 * 1024


class ByteStream(Protocol):
    def recv_into(self, buffer: Any, nbytes: int = ..., /) -> int: ...
    def sendall(self, data: Any, /) -> Any: ...


def pack_frame(payload: dict[str, Any]) -> bytes:
    """A frame without a MAC, as sent during the handshake."""
    return FrameWriter().frame(payload)


def _pack_parts(payload: dict[str, Any]) -> list[bytes | memoryview]:
    """``payload`` packed as ``msgpack.packb`` packs it, but as a list of buffers: each
    byte string of at least ``BULK`` bytes, at the top or in a map below it, is a buffer
    of its own after its msgpack header."""
    parts: list[bytes | memoryview] = []
    small: list[bytes] = []
    _pack_into(payload, small, parts)
    if small:
        parts.append(b"".join(small))
    return parts


def _is_bulk(value: object) -> bool:
    return isinstance(value, (bytes, bytearray, memoryview)) and len(value) >= BULK


def _has_bulk(payload: dict[str, Any]) -> bool:
    return any(_is_bulk(value) or (isinstance(value, dict) and _has_bulk(value))
               for value in payload.values())


def _pack_into(mapping: dict[str, Any], small: list[bytes],
               parts: list[bytes | memoryview]) -> None:
    """Append ``mapping``'s encoding: small pieces gather in ``small`` until a bulk value
    closes them into one buffer of ``parts``."""
    small.append(_PACKER.pack_map_header(len(mapping)))
    for key, value in mapping.items():
        small.append(_PACKER.pack(key))
        if isinstance(value, dict):
            _pack_into(value, small, parts)
        elif _is_bulk(value):
            small.append(_BIN32.pack(0xC6, len(value)))
            parts.append(b"".join(small))
            small.clear()
            parts.append(value)
        else:
            small.append(_PACKER.pack(value))


def unpack_body(body: bytes | memoryview) -> dict[str, Any]:
    try:
        value = msgpack.unpackb(body, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        raise ProtocolError(f"undecodable frame body: {exc.__class__.__name__}") from None
    if not isinstance(value, dict):
        raise ProtocolError(f"frame body is a {type(value).__name__}, not a map")
    return value


class FrameReader:
    """Reads whole frames from a stream, through one reusable buffer.

    Each read takes whatever the socket holds, up to the buffer's room, so a frame and the
    frames queued behind it usually arrive in one call: a heartbeat costs one read, plus
    the one that finds the socket empty and waits. The buffer starts small and grows only
    when a frame needs it; the length is checked against ``max_frame`` before a single body
    byte is read, so a hostile length prefix costs nothing. Bytes read ahead are only ever
    frames of this connection: the MAC and the size limit apply when each frame is taken.

    A buffer grown past ``_KEEP_GROWN`` for a big frame is given back once a small frame
    has been taken: at the next read, when the few bytes held fit a small buffer, so a peer
    that keeps the socket full cannot keep the big one in use by read-ahead alone.
    """

    def __init__(self, stream: ByteStream, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self._stream = stream
        self.max_frame = max_frame
        self._buffer = bytearray(_INITIAL_BUFFER)
        self._start = 0  # the first byte not yet handed out
        self._end = 0  # the end of the bytes read
        self._shrink_due = False  # a small frame came out of a buffer grown for a big one
        self._mac: FrameMac | None = None

    def authenticate(self, mac: FrameMac) -> None:
        """From the next frame on, every frame must end with a MAC that ``mac`` accepts."""
        self._mac = mac

    @property
    def buffer_size(self) -> int:
        """The bytes this reader holds in memory for its connection."""
        return len(self._buffer)

    def _fill(self, needed: int) -> None:
        """Read until at least ``needed`` bytes past ``_start`` are held."""
        if self._shrink_due and needed <= _KEEP_GROWN:
            # Fewer than ``needed`` bytes are held: the copy is small, and the reads that
            # follow take at most a small buffer's worth ahead.
            self._resize(max(needed, _INITIAL_BUFFER))
        elif self._start + needed > len(self._buffer):  # no room after them: move them down
            held = self._end - self._start
            self._buffer[:held] = self._buffer[self._start:self._end]
            self._start, self._end = 0, held
        while self._end - self._start < needed:
            if self._end == 0:  # the usual wait for the next frame: no view to allocate
                got = self._stream.recv_into(self._buffer)
            else:
                got = self._stream.recv_into(memoryview(self._buffer)[self._end:])
            if got == 0:
                if self._end == self._start:
                    raise ConnectionClosed("connection closed by peer")
                raise ConnectionClosed("connection closed in the middle of a frame")
            self._end += got

    def _resize(self, size: int) -> None:
        """A buffer of ``size`` bytes holding what is held now, from its start."""
        held = self._buffer[self._start:self._end]
        self._buffer = bytearray(size)
        self._buffer[:len(held)] = held
        self._start, self._end = 0, len(held)
        self._shrink_due = False

    def read_frame(self) -> dict[str, Any]:
        if self._end - self._start < HEADER.size:
            self._fill(HEADER.size)
        (length,) = HEADER.unpack_from(self._buffer, self._start)
        if length > self.max_frame:
            during = "" if self._mac is not None else " before authentication"
            raise FrameTooLarge(f"frame of {length} bytes exceeds the {self.max_frame}-byte "
                                f"limit{during}")
        if length == 0:
            raise ProtocolError("empty frame")
        if self._mac is not None and length <= TAG_BYTES:
            raise ProtocolError(f"frame of {length} bytes is too short to carry its MAC")
        whole = HEADER.size + length
        if whole > len(self._buffer):
            self._resize(whole)
        elif len(self._buffer) > _KEEP_GROWN:
            self._shrink_due = whole <= _KEEP_GROWN  # the big frames may be over
        if self._end - self._start < whole:
            self._fill(whole)
        begin = self._start + HEADER.size
        self._start += whole
        if self._start == self._end:
            self._start = self._end = 0
        if self._mac is None:
            return unpack_body(memoryview(self._buffer)[begin:begin + length])
        tag_at = begin + length - TAG_BYTES
        body = memoryview(self._buffer)[begin:tag_at]
        self._mac.check(body, self._buffer[tag_at:tag_at + TAG_BYTES])
        return unpack_body(body)


class FrameWriter:
    """Makes the frames one side sends, plain until ``authenticate``, then with a MAC.

    The MAC counts frames, so frames must go on the wire in the order they were made:
    a sender shared by several greenlets makes and sends each frame under one lock.
    """

    def __init__(self) -> None:
        self._mac: FrameMac | None = None

    def authenticate(self, mac: FrameMac) -> None:
        self._mac = mac

    def frame(self, payload: dict[str, Any]) -> bytes:
        return self.seal(msgpack.packb(payload, use_bin_type=True))

    def frame_parts(self, payload: dict[str, Any]) -> list[bytes | memoryview]:
        """The frame of ``payload`` as buffers to send one after the other (``send_parts``):
        a big byte string in it (a log or file chunk) is one of them as it is, not copied
        into the packed body and then again into the frame. The bytes on the wire are
        those of ``frame``."""
        if not _has_bulk(payload):
            return [self.frame(payload)]
        body = _pack_parts(payload)
        length = sum(len(part) for part in body)
        if self._mac is None:
            return [HEADER.pack(length), *body]
        tag = self._mac.next_tag_of_parts(body)
        return [HEADER.pack(length + TAG_BYTES), *body, tag]

    def seal(self, body: bytes) -> bytes:
        """The frame that carries ``body`` (already encoded)."""
        if self._mac is None:
            return HEADER.pack(len(body)) + body
        length = len(body) + TAG_BYTES
        return b"".join((HEADER.pack(length), body, self._mac.next_tag(body)))


class FrameChannel:
    """Both directions of one connection's frames: plain during the handshake, each
    frame authenticated from ``authenticate`` on."""

    def __init__(self, stream: ByteStream, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self.stream = stream
        self.reader = FrameReader(stream, min(max_frame, HANDSHAKE_MAX_FRAME))
        self._max_frame = max_frame  # the limit once the peer has proved who it is
        self.writer = FrameWriter()
        self.authenticated = False

    def authenticate(self, sending_key: bytes, receiving_key: bytes,
                     keep_sending_cipher: bool = True) -> None:
        """``keep_sending_cipher=False`` for one of many connections that send little (the
        master's to its nodes): see ``FrameMac``."""
        self.writer.authenticate(FrameMac(sending_key, keep_sending_cipher))
        self.reader.authenticate(FrameMac(receiving_key))
        self.reader.max_frame = self._max_frame
        self.authenticated = True

    def read(self) -> dict[str, Any]:
        return self.reader.read_frame()

    def frame(self, payload: dict[str, Any]) -> bytes:
        return self.writer.frame(payload)

    def send(self, payload: dict[str, Any]) -> None:
        """Make and send one frame; only for a connection with a single sender. A big byte
        string in it (a log chunk to the CLI) is sent from where it lies, not copied into
        the frame (``FrameWriter.frame_parts``)."""
        parts = self.writer.frame_parts(payload)
        if len(parts) == 1:
            self.stream.sendall(parts[0])
        else:
            send_parts(self.stream, parts)


def send_whole(stream: ByteStream, frame: bytes) -> None:
    """Send all of ``frame``, even if the caller is interrupted part-way.

    A greenlet killed (Ctrl-C on the console) or timed out in the middle of ``sendall``
    would leave half a frame on the wire and corrupt the stream for everyone after it. So
    an interrupt is held until the frame is complete, then raised. Socket errors are not
    held: the connection is gone anyway.
    """
    send_parts(stream, [frame])


MAX_GATHER = 512


def send_parts(stream: ByteStream, parts: list[bytes | memoryview]) -> None:
    """``send_whole`` of the frame made of ``parts`` (``FrameWriter.frame_parts``), with
    one ``sendmsg`` for all of them where the socket has it (TLS has not: part by part).
    At most ``MAX_GATHER`` buffers go to one ``sendmsg`` (the kernel refuses more than
    IOV_MAX, 1,024 on Linux, with EMSGSIZE)."""
    views = [memoryview(part).cast("B") for part in parts if len(part)]
    gather = len(views) > 1 and hasattr(stream, "sendmsg")
    interrupted: BaseException | None = None
    first = 0  # views before it are sent
    while first < len(views):
        try:
            sent = (stream.sendmsg(views[first:first + MAX_GATHER])  # type: ignore[attr-defined]
                    if gather else stream.send(views[first]))  # type: ignore[attr-defined]
        except OSError:
            raise
        except NotImplementedError:  # a TLS socket has no sendmsg
            gather = False
            continue
        except BaseException as exc:
            interrupted = interrupted or exc
            continue
        while first < len(views) and sent >= len(views[first]):
            sent -= len(views[first])
            first += 1
        if sent:
            views[first] = views[first][sent:]
    if interrupted is not None:
        raise interrupted
