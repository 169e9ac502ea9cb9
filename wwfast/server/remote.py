"""A worker's view of serve's one boot ledger and manifest, both kept by the supervisor.

`RemoteLedger` is a BootLedger whose events (a transfer began, ended, was refused: plain tuples, see
wwfast.server.ledger) go to the supervisor's ledger at once and never wait;
what must be answered (the catalog a node's boot is pinned to, /status, /metrics) is a call that
waits for the supervisor's reply; but while the epoch word (wwfast.server.epoch_word) says the pins are
settled on this worker's current epoch, the catalog can only be that one: the worker answers alone and
sends the pin as an event. The traffic counters of /metrics stay in the worker (`metrics`,
counted on the hot path as in one process) and are summed by the supervisor when /metrics is asked.

`PushedCatalogs` stands where one process has its CatalogWatcher: the supervisor alone watches
manifest.json and pushes each new manifest (bytes, numbered by an epoch) to every worker, before any
reply that names that epoch; so every worker answers the generation the supervisor serves.
"""
import itertools
import json
import logging
import time

from wwfast.server.catalog import Catalog, ManifestError
from wwfast.server.channel import ChannelClosed, Stalled
from wwfast.server.ledger import BootLedger

log = logging.getLogger("wwfast.serve")

CALL_TIMEOUT = 10.0     # a supervisor this slow is stuck: answer from the worker's own view instead


class PushedCatalogs:
    """The catalogs a worker holds, by epoch; `current` and `loaded` as CatalogWatcher has them."""

    def __init__(self, store, state_dir=None):
        self.store = store
        self.state_dir = state_dir   # as CatalogWatcher's (/blob answers a following server the manifest)
        self.current = Catalog.empty()
        self.current.epoch = 0
        self.loaded = False
        self.on_swap = None
        self.by_epoch = {0: self.current}

    def add(self, epoch, raw, current, live=None):
        """The manifest `raw` of `epoch`; `current`: it is now the one new boots get. `live`: the epochs
        the supervisor still serves (pins); the others are dropped."""
        if epoch not in self.by_epoch:
            try:
                catalog = Catalog.parse(raw, self.store, f"manifest epoch {epoch} (from the supervisor)")
            except ManifestError as e:       # the supervisor parsed these very bytes: cannot happen
                log.error("%s", e)
                return
            catalog.epoch = epoch
            self.by_epoch[epoch] = catalog
        if current:
            old, self.current, self.loaded = self.current, self.by_epoch[epoch], True
            if self.on_swap is not None and old is not self.current:
                self.on_swap(old, self.current)
        if live is not None:
            keep = set(live) | {self.current.epoch}
            for gone in [e for e in self.by_epoch if e not in keep]:
                del self.by_epoch[gone]

    def get(self, epoch):
        return self.by_epoch.get(epoch, self.current)


class SupervisorLink:
    """The worker's end of its channel: events out without waiting, calls that wait, pushes handled."""

    def __init__(self, channel, catalogs, metrics):
        self.channel = channel
        self.catalogs = catalogs
        self.metrics = metrics
        self.loop = None
        self.on_lost = None          # called once when the supervisor is gone
        self.on_members = None       # scale-out: the live servers and caches pushed (cluster_view.PushedView)
        self.lost = False
        self._ids = itertools.count(1)
        self._writer = False

    def attach(self, loop, on_lost):
        self.loop, self.on_lost = loop, on_lost
        loop.add_reader(self.channel.fileno(), self._readable)

    def detach(self):
        if self.loop is not None and not self.lost:
            self.loop.remove_reader(self.channel.fileno())
            if self._writer:
                self.loop.remove_writer(self.channel.fileno())
                self._writer = False

    # -- out -----------------------------------------------------------------------------------
    def send(self, *message):
        if self.lost:
            return
        try:
            if not self.channel.send(message) and not self._writer and self.loop is not None:
                self._writer = True
                self.loop.add_writer(self.channel.fileno(), self._writable)
        except ChannelClosed:
            self._gone()

    def _writable(self):
        try:
            done = self.channel.flush()
        except ChannelClosed:
            done = True
            self._gone()
        if done and self._writer:
            self._writer = False
            self.loop.remove_writer(self.channel.fileno())

    def call(self, name, *args):
        """The supervisor's answer to `name(*args)`; raises ChannelClosed when it is gone, Stalled when it
        did not answer in time (logged; the caller answers from the worker's own view)."""
        if self.lost:
            raise ChannelClosed("the supervisor is gone")
        cid = next(self._ids)
        try:
            self.channel.send(("call", cid, name, args))
            self.channel.flush_wait(CALL_TIMEOUT)
            deadline = time.monotonic() + CALL_TIMEOUT
            while True:
                reply = None
                for message in self.channel.receive():
                    if message[0] == "reply" and message[1] == cid:
                        reply = message
                    else:
                        self.handle(message)    # a push sent before the reply is applied before it
                if reply is not None:
                    return reply[2]
                left = deadline - time.monotonic()
                if left <= 0:
                    raise Stalled(f"no answer to {name} in {CALL_TIMEOUT:.0f} s")
                self.channel.wait_readable(left)
        except ChannelClosed:
            self._gone()
            raise
        except Stalled as e:
            log.error("supervisor: %s", e)
            raise

    # -- in ------------------------------------------------------------------------------------
    def _readable(self):
        try:
            messages = self.channel.receive()
        except ChannelClosed:
            self._gone()
            return
        for message in messages:
            self.handle(message)

    def handle(self, message):
        kind = message[0]
        if kind == "epoch":                       # ("epoch", epoch, raw, current, live)
            _, epoch, raw, current, live = message
            self.catalogs.add(epoch, raw, current, live)
            if current:
                self.send("swapped", epoch, self.catalogs.current.generation)
        elif kind == "members":                   # ("members", {"servers": [...] or None, "caches": [...]})
            if self.on_members is not None:
                self.on_members(message[1])
        elif kind == "snapshot?":                 # the supervisor sums /metrics
            self.send("snapshot", message[1], self.metrics.state())
        elif kind == "reply":
            pass                                  # the answer to a call that gave up waiting
        else:
            log.warning("unknown message from the supervisor: %r", kind)

    def _gone(self):
        if self.lost:
            return
        self.lost = True
        log.error("lost the supervisor; this worker stops")
        if self.loop is not None:
            self.loop.remove_reader(self.channel.fileno())
            if self._writer:
                self.loop.remove_writer(self.channel.fileno())
        if self.on_lost is not None:
            self.on_lost()


class RemoteLedger(BootLedger):
    """BootLedger for the routes and transports of a worker: it builds the same events (its own range
    of request numbers, `first_seq`) and sends them to the supervisor's ledger instead of applying them."""

    def __init__(self, link, catalogs, first_seq, word):
        self.link = link
        self.word = word
        self.catalogs = catalogs
        self.metrics = link.metrics
        self.clock = time.time
        self._seq = itertools.count(first_seq)

    def apply(self, event):
        self.link.send("event", event)

    # -- pins: the supervisor decides, so a node's requests may land on any worker ----------------
    def catalog_for(self, mac, stage, current):
        if self.word.settled_on(current.epoch):
            self.link.send("pin", mac, stage, current.epoch, self.clock())
            self.metrics.pin_answer("worker")
            return current
        return self._catalog("catalog_for", mac, stage, current=current)

    def pinned(self, mac, current):
        if self.word.settled_on(current.epoch):
            return current
        return self._catalog("pinned", mac, current=current)

    def _catalog(self, name, *args, current):
        self.metrics.pin_answer("supervisor")
        try:
            return self.catalogs.get(self.link.call(name, *args))
        except (ChannelClosed, Stalled):
            return current

    def manifest_swapped(self):
        pass                         # counted by the supervisor, which swaps first

    # -- reading it back: the supervisor's whole view ---------------------------------------------
    def status_json(self, catalog):
        try:
            return self.link.call("status_json")
        except (ChannelClosed, Stalled) as e:
            return (json.dumps({"error": f"status unavailable: {e}"}) + "\n").encode()

    def status_document(self, catalog):
        return json.loads(self.status_json(catalog))

    def node_document(self, catalog, node_id):
        try:
            return self.link.call("node_document", node_id)
        except (ChannelClosed, Stalled) as e:
            return {"node": node_id, "error": f"status unavailable: {e}"}

    def metrics_text(self, catalog):
        try:
            return self.link.call("metrics_text", self.metrics.state())
        except (ChannelClosed, Stalled):
            return self.metrics.render({}, catalog.generation, len(catalog.unserved))

    # -- lifecycle -------------------------------------------------------------------------------
    def attach(self, loop):
        pass

    async def close(self):
        pass
