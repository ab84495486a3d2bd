"""copy to several nodes through a chain (docs/chain-design.md): the master sends every
byte once, to the first node; each node forwards each frame to the next over a data link
opened with a one-time ticket, then writes it. Every node checks the whole stream against
the SHA-256 the master computed while reading, sent over its own master connection,
before it lands anything.

A node that dies, breaks its link or accepts nothing for a while is cut out: it is named
with its reason, the nodes before it carry on, and the nodes after it (which lose their
link, and with it their partial copy) get the copy again through a new chain formed
without it, once this one is done. A node that fails on its own (its sandbox refuses DEST,
its disk is full) stays in the chain: it still forwards what it cannot write.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
import uuid

import gevent
import gevent.event

from common import tickets
from common.errors import CorralError, ErrorCode
from common.messages import (
    LinkLost,
    LinkTicket,
    Message,
    NextHop,
    PutBegin,
    PutChunk,
    PutEnd,
    PutEntry,
    PutProgress,
)
from common.placeholders import expand
from common.replies import PutAnswer
from common.stream_digest import StreamDigest
from common.text import peer_message
from common.tree import Tree
from common.turns import Turns
from master.front.results import Progress, ProgressCallback
from master.registry import Node
from master.session import Session

log = logging.getLogger("corral.master.chain")

# Each node forwards a frame only once it has it whole (its MAC checked): every hop adds a
# frame's time on the wire, 93 ms for 1 MiB at 100 Mbit/s, 23 ms for this. On loopback the
# nodes spent 1.5x this size's CPU with 1 MiB frames, and 1.1x with 64 KiB ones.
CHUNK = 256 * 1024
SLOWEST_DISK = 20 * 1024 * 1024  # bytes/s: how long a node may take to sync, at worst
PROGRESS_EVERY = 0.25
STALL_STEP = 2.0  # seconds more patience per node nearer the front of a chain

# A node's own connection is gone or silent: it cannot forward either.
_CUT_CODES = frozenset({ErrorCode.DISCONNECTED, ErrorCode.NO_REPLY, ErrorCode.CANCELLED})


@dataclasses.dataclass
class PushTarget:
    """A node a push goes to: its request, and its answer or error once known."""

    node: Node
    session: Session
    req: int = 0
    result: gevent.event.AsyncResult | None = None
    answer: PutAnswer | None = None
    error: CorralError | None = None


@dataclasses.dataclass
class _Hop(PushTarget):
    """One node's place in one chain."""

    retry: bool = False  # it lost the node before it: it goes into the next chain
    cut: bool = False  # out of this chain: nothing more is waited for from it
    received: int = 0

    @property
    def pending(self) -> bool:
        return not self.cut and self.answer is None and self.error is None


class _Slowest:
    """Progress of a chained copy: the bytes of the node furthest behind."""

    def __init__(self, callback: ProgressCallback | None, total: int) -> None:
        self.callback, self.total = callback, total
        self.started = time.monotonic()
        self._last = 0.0

    def show(self, hops: list[_Hop]) -> None:
        now = time.monotonic()
        if self.callback is None or now - self._last < PROGRESS_EVERY:
            return
        self._last = now
        pending = [hop for hop in hops if hop.pending]
        if pending:
            behind = min(pending, key=lambda hop: hop.received)
            self.callback(Progress(behind.received, self.total, now - self.started,
                                   behind.node.name))


class _Chain:
    """One chain through ``nodes``, in that order, from start to the last answer."""

    def __init__(self, token: bytes, dest: str, into: bool, tree: Tree,
                 hops: list[_Hop], meter: _Slowest, stall: float, ranks: dict[str, int]
                 ) -> None:
        self.token, self.dest, self.into, self.tree = token, dest, into, tree
        self.ranks = ranks  # each node's place among all the copy's targets, for ?RANK
        self.stall = stall  # seconds a node may accept (or report) nothing
        self.hops = hops
        self.meter = meter
        self.transfer = uuid.uuid4().hex
        self._turns = Turns(gevent.sleep)
        self._heard = time.monotonic()

    def run(self) -> None:
        started = time.monotonic()
        try:
            self._begin()
            digest = self._stream()
            self._seal(digest)
            streamed = time.monotonic()
            self._await_answers()
            log.info("chain of %d nodes to %s: streamed in %.2f s, all answered %.2f s later",
                     len(self.hops), self.dest, streamed - started,
                     time.monotonic() - streamed)
        finally:
            for hop in self.hops:
                if hop.req:
                    hop.session.end(hop.req, cancel=hop.answer is None)

    def _begin(self) -> None:
        # From the last node back: each receiver is told whom to expect before its sender
        # is told where to send (over other connections, so the receiver also waits a
        # little for a ticket that arrives first).
        for index in reversed(range(len(self.hops))):
            hop = self.hops[index]
            upstream = self.hops[index - 1].node.name if index else ""
            after = self.hops[index + 1] if index + 1 < len(self.hops) else None
            downstream = None if after is None else self._next_hop(hop.node, after.node)
            dest = expand(self.dest, hop.node.name, self.ranks[hop.node.name])
            begin = PutBegin(req=0, dest=dest, into=self.into, transfer=self.transfer,
                             upstream=upstream, downstream=downstream,
                             stall=self._stall_at(index), clock=time.time())
            try:
                hop.req, hop.result = hop.session.begin(
                    functools.partial(_stamped, begin),
                    sink=functools.partial(self._on_event, index))
            except (CorralError, OSError) as exc:
                self._cut(index, _as_error(exc))
                continue
            hop.result.rawlink(functools.partial(self._on_answer, index))

    def _stall_at(self, index: int) -> float:
        """How long the node at ``index`` (-1: the master) waits on the next one. A stalled
        node stalls every node before it, each a moment after the one behind it: the
        nearer the front, the longer the wait, so the node just before the stalled one
        gives up first, cuts it out, and the others go on."""
        step = min(STALL_STEP, self.stall / len(self.hops))
        return self.stall + (len(self.hops) - 2 - index) * step

    def _next_hop(self, sender: Node, receiver: Node) -> NextHop:
        assert receiver.data_address is not None
        ticket = tickets.issue(self.token, self.transfer, sender.name, receiver.name)
        host, port = receiver.data_address
        return NextHop(host=host, port=port, ticket=LinkTicket(
            transfer=ticket.transfer, sender=ticket.sender, receiver=ticket.receiver,
            expires=ticket.expires, nonce=ticket.nonce, mac=ticket.mac))

    def _stream(self) -> bytes:
        """Every entry, once, to the first node; the SHA-256 of the stream."""
        digest = StreamDigest()
        head = self.hops[0]
        for entry in self.tree.entries:
            if head.cut or not any(hop.pending for hop in self.hops):
                break
            digest.entry(entry.relpath, entry.kind, entry.mode, entry.size, entry.target)
            if entry.kind != "file":
                self._send_head(PutEntry(req=head.req, relpath=entry.relpath, kind=entry.kind,
                                         mode=entry.mode, size=0, target=entry.target))
                continue
            try:
                with open(entry.path, "rb") as source:
                    left = entry.size  # as planned, as each node expects
                    data = source.read(min(CHUNK, left))
                    digest.data(data)
                    self._send_head(PutEntry(req=head.req, relpath=entry.relpath,
                                             kind="file", mode=entry.mode, size=entry.size,
                                             data=data))
                    left -= len(data)
                    while left and not head.cut and (data := source.read(min(CHUNK, left))):
                        digest.data(data)
                        self._send_head(PutChunk(req=head.req, data=data))
                        left -= len(data)
            except OSError as exc:
                raise CorralError(f"{entry.path}: {exc.strerror or exc}",
                                  ErrorCode.IO) from None
        return digest.digest()

    def _send_head(self, message: Message) -> None:
        head = self.hops[0]
        if head.cut:
            return
        self._turns.take()  # a first node that takes all at once must not starve the hub
        watchdog = gevent.spawn_later(self._stall_at(-1), self._head_stalled)
        try:
            head.session.send(message)
        except (CorralError, OSError) as exc:
            self._cut(0, _as_error(exc))
        finally:
            watchdog.kill(block=False)

    def _head_stalled(self) -> None:
        """The first node took nothing for too long. A frame half sent cannot be taken
        back, so its connection is closed (it reconnects when it can)."""
        head, stall = self.hops[0], self._stall_at(-1)
        self._cut(0, CorralError(f"accepted nothing for {stall:g} s", ErrorCode.NO_REPLY))
        head.session.close(f"accepted nothing for {stall:g} s during a copy", silent=True)

    def _seal(self, digest: bytes) -> None:
        """The digest to every node still waiting for it; the first node forwards the
        end of the stream with it, so it gets it whatever became of its own copy."""
        if not any(hop.pending for hop in self.hops):
            return  # every node has answered or failed: the cancels end it
        for index, hop in enumerate(self.hops):
            if hop.req and not hop.cut and (index == 0 or hop.pending):
                try:
                    hop.session.send(PutEnd(req=hop.req, digest=digest))
                except (CorralError, OSError) as exc:
                    self._cut(index, _as_error(exc))

    def _await_answers(self) -> None:
        """Until every node has answered or is cut out; a node that neither answers nor
        reports progress for a while (its syncs included) is cut out."""
        patience = self.stall + self.tree.size / SLOWEST_DISK
        self._heard = time.monotonic()
        while pending := [hop for hop in self.hops if hop.pending]:
            unready = [hop.result for hop in pending
                       if hop.result is not None and not hop.result.ready()]
            if unready:
                gevent.wait(unready, timeout=1.0, count=1)
            else:
                gevent.sleep(0.01)  # answers in, their callbacks not run yet
            self.meter.show(self.hops)
            if time.monotonic() - self._heard > patience:
                for hop in pending:
                    if hop.pending:
                        self._cut(self.hops.index(hop), CorralError(
                            f"no reply within {patience:g} s", ErrorCode.NO_REPLY))

    def _on_event(self, index: int, message: Message) -> None:
        self._heard = time.monotonic()
        if isinstance(message, PutProgress):
            self.hops[index].received = message.received
            self.meter.show(self.hops)
        elif isinstance(message, LinkLost):
            after = index + 1
            if after < len(self.hops) and self.hops[after].node.name == message.node:
                sender = self.hops[index].node.name
                self._cut(after, CorralError(f"cut out of the chain: {sender} could not "
                                             f"forward to it: {peer_message(message.reason)}",
                                             ErrorCode.DISCONNECTED))

    def _on_answer(self, index: int, result: gevent.event.AsyncResult) -> None:
        self._heard = time.monotonic()
        hop = self.hops[index]
        if result.successful():
            if not hop.cut:
                hop.answer = result.value
            return
        exc = _as_error(result.exception)
        if exc.code is ErrorCode.UPSTREAM_LOST:
            # Alive and well, but fed by a node that was not: into the next chain.
            if hop.answer is None:
                hop.retry, hop.error = True, None
            self._cut(index, exc)
        elif exc.code in _CUT_CODES:
            self._cut(index, exc)
        elif hop.error is None and not hop.cut:
            hop.error = exc  # its own failure; it still forwards to the nodes after it

    def _cut(self, index: int, error: CorralError) -> None:
        """Take the node at ``index`` out of this chain, and every node after it that has
        not finished yet into the next one."""
        hop = self.hops[index]
        if hop.answer is not None:
            return
        if not hop.retry and hop.error is None:
            hop.error = error
        self._drop(hop, error)
        for later in self.hops[index + 1:]:
            if later.pending:
                later.retry = True
                self._drop(later, error)

    def _drop(self, hop: _Hop, error: CorralError) -> None:
        if hop.cut:
            return
        hop.cut = True
        if hop.req:
            hop.session.end(hop.req, cancel=True)
        if hop.result is not None and not hop.result.ready():
            hop.result.set_exception(error)


def _stamped(begin: PutBegin, req: int) -> PutBegin:
    return dataclasses.replace(begin, req=req)


def _as_error(exc: BaseException | None) -> CorralError:
    if isinstance(exc, CorralError):
        return exc
    return CorralError(f"connection lost: {exc}", ErrorCode.DISCONNECTED)


def push_chain(token: bytes, dest: str, into: bool, tree: Tree, nodes: list[Node],
               progress: ProgressCallback | None, stall: float
               ) -> tuple[dict[str, PutAnswer], dict[str, CorralError]]:
    """Copy ``tree`` to ``nodes`` through chains, re-formed around the nodes that fail;
    each node's answer, or its error."""
    answers: dict[str, PutAnswer] = {}
    errors: dict[str, CorralError] = {}
    meter = _Slowest(progress, tree.size)
    ranks = {node.name: rank for rank, node in enumerate(nodes)}
    waiting = nodes
    while waiting:
        hops = []
        for node in waiting:
            if node.session is None:
                errors[node.name] = CorralError(f"not connected ({node.state})",
                                                ErrorCode.DISCONNECTED)
            elif node.data_address is None:
                errors[node.name] = CorralError("no data port known for this node",
                                                ErrorCode.PROTOCOL)
            else:
                hops.append(_Hop(node, node.session))
        if not hops:
            break
        chain = _Chain(token, dest, into, tree, hops, meter, stall, ranks)
        chain.run()
        for hop in hops:
            if hop.answer is not None:
                answers[hop.node.name] = hop.answer
            elif not hop.retry:
                errors[hop.node.name] = hop.error or CorralError("no answer")
        retry = [hop for hop in hops if hop.retry and hop.answer is None]
        if len(retry) == len(hops):  # nobody answered nor was cut: a new chain would too
            for hop in retry:
                errors[hop.node.name] = CorralError(
                    "lost its data link in every chain tried", ErrorCode.UPSTREAM_LOST)
            break
        if retry:
            log.info("copy to %s: re-forming the chain without %s", dest,
                     ", ".join(sorted(name for name in errors if name not in answers)))
        waiting = [hop.node for hop in retry]
    return answers, errors
