"""`serve --workers N`: N worker processes on shared ports, one boot ledger, one manifest watcher.

The supervisor binds every port once per worker slot (wwfast.server.reuseport) and starts a worker
per slot (`python -m wwfast.server.worker`); a worker that dies is started again on the same
sockets, and the others never notice (wwfast.server.worker_slots: the slots' processes). It keeps
what must be one for the whole server:

- the boot ledger (status, pins, boot records, the boot histogram): workers send their events over
  their channel as they happen and call for what needs an answer (wwfast.server.remote). Before
  answering any call the supervisor reads every worker's channel and applies the events first: an
  event a node caused on one worker is already in that worker's channel when the node's next
  request reaches another, so each node's record is in the order the node lived it.
- the manifest: it alone watches manifest.json; each new one gets an epoch number and its bytes go
  to every worker ahead of any reply naming it. /status lists each worker's generation.
- the epoch word (wwfast.server.epoch_word): while every worker has the current epoch and every pin
  is on it, workers answer pin questions alone and send the pin after as an event; otherwise they ask.
- /metrics: the sum of every worker's counters (asked fresh from each when /metrics is asked; a
  dead worker's last counts are kept) with the ledger's boot histogram.
- a scale-out's part (wwfast.server.scaleout: etcd pointer, announcer, boot records from the one ledger),
  and the live servers and caches, pushed to every worker as they change (for node scripts' headers).
"""
import asyncio
import copy
import itertools
import json
import logging
import signal
import socket
import time

from wwfast.server import loops, reuseport
from wwfast.server.catalog import CatalogWatcher
from wwfast.server.channel import ChannelClosed
from wwfast.server.epoch_word import EpochWord
from wwfast.server.ledger import BootLedger
from wwfast.server.service import attach_scaleout
from wwfast.server.worker_slots import QUICK_DEATH, Slot, WorkerSlots

log = logging.getLogger("wwfast.serve")

# /metrics waits for every live worker's counts (a worker that dies cancels its wait): this is only a
# backstop for a worker that is alive but stuck, so it is generous (but under remote.CALL_TIMEOUT, the
# asking worker's own wait). At 2 s a loaded machine's slow worker could make /metrics show stale counts
# (a test asserting on a counter would fail at random).
SNAPSHOT_WAIT = 6.0


def _happened_at(slot_message):
    """When a worker's ledger event happened (a request's start, a transfer's end); other messages first."""
    message = slot_message[1]
    if message[0] == "pin":
        return message[4]
    if message[0] != "event":
        return 0.0
    event = message[1]
    return event[3] if event[0] == "ended" else event[2].get("start", 0.0)


class Supervisor(WorkerSlots):
    def __init__(self, opts, workers):
        self.opts = opts
        self.worker_opts = copy.copy(opts)
        self.scaleout = None           # wwfast.server.scaleout.ScaleOut: etcd and the members, for all workers
        self.n = workers
        self.slots = [Slot(i) for i in range(workers)]
        self.groups = {}
        self.epochs = {}               # epoch -> catalog served now (current or pinned)
        self.epoch_ids = itertools.count(1)
        self.incarnations = itertools.count(1)     # each worker process numbers its requests from its own range
        self.retired = []              # counters of workers that died
        self.waiters = {}              # (slot, request) -> future of a /metrics snapshot
        self.requests = itertools.count(1)
        self.stopping = False
        self.exit_code = 0
        self.loop = None
        self.ledger = None
        self.watcher = None
        self.word = EpochWord.create()   # unsettled until the workers have the first epoch

    # -- start and stop ------------------------------------------------------------------------
    def bind(self):
        opts = self.opts
        self.groups["http"] = reuseport.bind_group(socket.SOCK_STREAM, opts.http_bind, opts.http_port, self.n)
        if opts.tls:
            self.groups["https"] = reuseport.bind_group(socket.SOCK_STREAM, opts.http_bind, opts.tls_port, self.n)
        if opts.tftp_enabled:
            self.groups["tftp"] = reuseport.bind_group(socket.SOCK_DGRAM, opts.tftp_bind, opts.tftp_port, self.n)

    def run(self):
        try:
            self.bind()
        except OSError as e:
            log.error("serve: %s", e)
            return 2
        try:
            loops.run(self.supervise(), requested=self.opts.loop)
        finally:
            for group in self.groups.values():
                for sock in group:
                    sock.close()
        return self.exit_code

    async def supervise(self):
        self.loop = loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        self.stop = stop
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        self.ledger = BootLedger(self.opts.state_dir)
        self.watcher = CatalogWatcher(self.opts.state_dir, on_swap=self.swapped)
        self.watcher.current.epoch = 0
        self.epochs[0] = self.watcher.current
        self.scaleout = attach_scaleout(self.opts, loop, self.ledger, self.watcher, on_members=self.push_members)
        self.ledger.attach(loop)
        self.watcher.start(loop)
        if self.scaleout is not None:
            self.scaleout.start()
        log.info("serve: %d workers on HTTP %s:%d%s", self.n, self.opts.http_bind,
                 self.groups["http"][0].getsockname()[1],
                 f", TFTP {self.opts.tftp_bind}:{self.groups['tftp'][0].getsockname()[1]}"
                 if "tftp" in self.groups else "")
        for slot in self.slots:
            self.spawn(slot)
        self.settle()
        checker = loop.call_later(1.0, self._check)
        try:
            await stop.wait()
        finally:
            checker.cancel()
            self.stopping = True
            await self.stop_workers()
            self.watcher.stop()
            if self.scaleout is not None:
                await loop.run_in_executor(None, self.scaleout.stop)
            await self.ledger.close()
        log.info("stopped")

    # -- the manifest --------------------------------------------------------------------------
    @property
    def current(self):
        return self.watcher.current

    def live_epochs(self):
        """Epochs a reply may still name: current, pinned, and any a worker has not moved on from (it
        may have answered a pin alone from it that is still on its way here)."""
        return ({self.current.epoch} | {c.epoch for c in self.ledger.pins.catalogs()}
                | {s.epoch for s in self.slots if s.channel is not None})

    def swapped(self, _old, new):
        new.epoch = next(self.epoch_ids)
        self.word.set(new.epoch, settled=False)      # before any worker can see the new epoch
        self.ledger.manifest_swapped()
        live = self.live_epochs()
        for epoch in [e for e in self.epochs if e not in live]:
            del self.epochs[epoch]
        self.epochs[new.epoch] = new
        for slot in self.slots:
            if slot.channel is not None:
                self._send(slot, ("epoch", new.epoch, new.raw, True, sorted(live)))

    def settle(self):
        """Settle the epoch word when no worker answering a pin alone can disagree with the ledger: every
        worker has acknowledged the current epoch (what it answered alone before is applied: it came
        first on its channel) and every pin is on that epoch."""
        current = self.current
        if self.word.settled_on(current.epoch):
            return
        if (all(s.epoch == current.epoch for s in self.slots if s.channel is not None)
                and self.ledger.pins.all_on(current)):
            self.word.set(current.epoch, settled=True)

    def settle_expired(self):
        """Unsettled: boots abandoned on an older epoch expire (pins.HOLD_SECONDS), then settle if it can."""
        if not self.word.settled_on(self.current.epoch):
            self.ledger.pins.prune()
            self.settle()

    def _check(self):
        self.settle_expired()
        super()._check()

    def push_members(self):
        members = self.scaleout.members()
        for slot in self.slots:
            if slot.channel is not None:
                self._send(slot, ("members", members))

    # -- messages ------------------------------------------------------------------------------
    def _send(self, slot, message):
        try:
            if not slot.channel.send(message):
                self._want_write(slot)
        except ChannelClosed:
            self.lost(slot)

    def _want_write(self, slot):
        def writable():
            if slot.channel is None:
                return
            try:
                done = slot.channel.flush()
            except ChannelClosed:
                self.lost(slot)
                return
            if done:
                self.loop.remove_writer(slot.channel.fileno())
        self.loop.add_writer(slot.channel.fileno(), writable)

    def drain(self):
        """Read every worker's channel; apply all events, then answer the calls (see the module doc)."""
        events, calls = [], []
        for slot in self.slots:
            if slot.channel is None:
                continue
            try:
                messages = slot.channel.receive()
            except ChannelClosed:
                self.lost(slot)
                continue
            for message in messages:
                (calls if message[0] == "call" else events).append((slot, message))
        # Workers send at once but are read here one after another: events that waited in several
        # channels are applied in the order they happened (a node's script on one worker, then its
        # kernel on another, must not start its boot with the kernel). Stable: one worker's order stays.
        events.sort(key=_happened_at)
        for slot, message in events:
            self.event(slot, message)
        if events:
            self.settle()
        for slot, message in calls:
            if slot.channel is not None:
                self.answer(slot, *message[1:])

    def _apply(self, method, *args, **kwargs):
        try:
            return method(*args, **kwargs)
        except Exception:        # one bad record must never take the supervisor down
            log.exception("ledger: %s failed", getattr(method, "__name__", method))
            return None

    def event(self, slot, message):
        kind = message[0]
        if kind == "event":                      # a BootLedger event (wwfast.server.ledger)
            event = message[1]
            if event[0] == "began":
                slot.open[(event[1], event[2].get("seq"))] = True
            elif event[0] == "ended":
                slot.open.pop((event[1], event[2]), None)
            self._apply(self.ledger.apply, event)
        elif kind == "pin":                      # ("pin", mac, stage, epoch, at): answered alone, settled
            _, mac, stage, epoch, _at = message
            catalog = self.epochs.get(epoch)
            if catalog is None:                  # cannot happen: live_epochs keeps what a worker holds
                log.error("worker %d pinned %s to epoch %d, which is gone", slot.index, mac, epoch)
                catalog = self.current
            self._apply(self.ledger.catalog_for, mac, stage, catalog)
        elif kind == "swapped":
            slot.epoch, slot.generation = message[1], message[2]
        elif kind == "snapshot":
            slot.snapshot = message[2]
            waiter = self.waiters.pop((slot, message[1]), None)
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
        elif kind == "ready":
            slot.ready = True
            slot.quick_deaths = 0 if time.monotonic() - slot.started >= QUICK_DEATH else slot.quick_deaths
        else:
            log.warning("worker %d sent an unknown message %r", slot.index, kind)

    def answer(self, slot, cid, name, args):
        if name == "metrics_text":
            slot.snapshot = args[0]
            self.loop.create_task(self.metrics_reply(slot, cid))
            return
        try:
            if name == "catalog_for":
                value = self.ledger.catalog_for(args[0], args[1], self.current).epoch
                self.settle()        # (it may have ended a boot's pin) before the worker has its answer
            elif name == "pinned":
                value = self.ledger.pinned(args[0], self.current).epoch
            elif name == "status_json":
                value = self.status_json()
            elif name == "node_document":
                value = self.ledger.node_document(self.current, args[0])
            else:
                raise ValueError(f"unknown call {name!r}")
        except Exception:
            log.exception("worker %d: %s failed", slot.index, name)
            value = None
        self._send(slot, ("reply", cid, value))

    # -- what the ledger answers -----------------------------------------------------------------
    def status_json(self):
        doc = self.ledger.status_document(self.current)
        if self.scaleout is not None:
            doc = self.scaleout.merge_status(doc)      # every server's boot records (etcd)
        doc["workers"] = [{"worker": s.index, "pid": s.proc.pid if s.proc else 0, "ready": s.ready,
                           "generation": s.generation, "restarts": s.restarts} for s in self.slots]
        return (json.dumps(doc, sort_keys=True, indent=1) + "\n").encode()

    async def metrics_reply(self, asking, cid):
        request = next(self.requests)
        waiting = []
        for slot in self.slots:
            if slot is not asking and slot.channel is not None and slot.ready:
                future = self.loop.create_future()
                self.waiters[(slot, request)] = future
                waiting.append(future)
                self._send(slot, ("snapshot?", request))
        if waiting:
            await asyncio.wait(waiting, timeout=SNAPSHOT_WAIT)
        for key in [k for k in self.waiters if k[1] == request]:
            log.warning("worker %d did not send its counts within %g s: /metrics shows its last ones",
                        key[0].index, SNAPSHOT_WAIT)
            self.waiters.pop(key).cancel()
        states = self.retired + [s.snapshot for s in self.slots if s.snapshot]
        self.ledger.metrics.take_sums(states)
        text = self._apply(self.ledger.metrics_text, self.current) or ""
        if asking.channel is not None:
            self._send(asking, ("reply", cid, text))
