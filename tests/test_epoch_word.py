"""serve --workers: a worker answers a node's pin alone only while the epoch word says nothing can
disagree (wwfast.server.epoch_word); around a publish it asks the supervisor, and a pin it answered
alone just before the publish still holds the node's boot on the old generation.

The supervisor and two workers are the real objects on real socket pairs, in one process: the test
decides when each side reads its channel, so the interleavings below are exact, not timed."""
import os
import select
import socket
import threading
import types

import pytest

from serve_helpers import make_node, publish
from wwfast import layout
from wwfast.server.catalog import Catalog
from wwfast.server.channel import Channel
from wwfast.server.epoch_word import EpochWord
from wwfast.server.ledger import BootLedger
from wwfast.server.metrics import Metrics
from wwfast.server.remote import PushedCatalogs, RemoteLedger, SupervisorLink
from wwfast.server.supervisor import Supervisor

X, Y = "52:54:00:00:00:01", "52:54:00:00:00:02"


def new_catalog(state, generation):
    publish(state, {"x": make_node(state, "x", X, b"image x"), "y": make_node(state, "y", Y, b"image y")},
            generation)
    with open(layout.manifest(state), "rb") as f:
        return Catalog.parse(f.read(), layout.store_dir(state), "test manifest")


class Rig:
    """A supervisor (its channels drained by a thread, as its event loop would) and two workers."""

    def __init__(self, state):
        self.state = state
        self.sup = Supervisor(types.SimpleNamespace(settings=None), 2)
        self.sup.ledger = BootLedger(state)
        self.sup.watcher = types.SimpleNamespace(current=None)
        self.publish("gen-1")
        self.workers = []
        for slot in self.sup.slots:
            parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            slot.channel, slot.epoch = Channel(parent), self.sup.current.epoch
            catalogs = PushedCatalogs(layout.store_dir(state))
            catalogs.add(self.sup.current.epoch, self.sup.current.raw, current=True)
            link = SupervisorLink(Channel(child), catalogs, Metrics())
            self.workers.append(RemoteLedger(link, catalogs, 1000 * (slot.index + 1), EpochWord(self.sup.word.fd)))
        self.sup.settle()
        self.lock = threading.Lock()        # held: the supervisor is busy and reads nothing
        self.stop = False
        self.thread = threading.Thread(target=self._drain, daemon=True)
        self.thread.start()

    def publish(self, generation):
        new = new_catalog(self.state, generation)
        old, self.sup.watcher.current = self.sup.watcher.current, new     # as CatalogWatcher does
        self.sup.swapped(old, new)

    def _drain(self):
        while not self.stop:
            fds = [s.channel.fileno() for s in self.sup.slots]
            ready, _, _ = select.select(fds, [], [], 0.05)
            if ready:
                with self.lock:
                    self.sup.drain()

    def ask(self, worker, mac, stage):
        """The catalog worker `worker` answers `mac`'s `stage` from (as its provisioning routes ask)."""
        w = self.workers[worker]
        return w.catalog_for(mac, stage, w.catalogs.current)

    def read_pushes(self, worker):
        self.workers[worker].link._readable()        # its loop's reader callback

    def close(self):
        self.stop = True
        self.thread.join()


@pytest.fixture
def rig(tmp_path):
    state = str(tmp_path)
    os.makedirs(layout.store_dir(state), exist_ok=True)
    r = Rig(state)
    yield r
    r.close()


def answers(rig, worker):
    return dict(rig.workers[worker].metrics.pin_answers)


def test_settled_workers_answer_alone_and_the_ledger_still_gets_every_pin(rig):
    assert rig.sup.word.read() == (1, True)
    for worker, stage in enumerate(["ipxe", "kernel"]):
        assert rig.ask(worker, X, stage).generation == "gen-1"
    assert answers(rig, 0) == answers(rig, 1) == {"worker": 1}
    rig.workers[0].link.call("status_json")            # a call: the supervisor has applied what came before
    assert len(rig.sup.ledger.pins) == 1 and rig.sup.ledger.pins.pinned(X, None).generation == "gen-1"
    assert rig.ask(1, X, "runtime").generation == "gen-1"
    rig.workers[0].link.call("status_json")
    assert len(rig.sup.ledger.pins) == 0               # the runtime answered alone ended the boot's pin


def test_a_pin_answered_alone_just_before_a_publish_holds_the_boot_on_the_other_worker(rig):
    with rig.lock:                                      # the supervisor is busy: x's pin waits in worker 0's channel
        assert rig.ask(0, X, "ipxe").generation == "gen-1"
        rig.publish("gen-2")
    assert rig.sup.word.read() == (2, False)            # unsettled before any worker could see epoch 2
    rig.read_pushes(1)
    assert rig.workers[1].catalogs.current.generation == "gen-2"
    # worker 1 has epoch 2 but may not answer alone: it asks, and the supervisor applies x's pin first
    assert rig.ask(1, X, "kernel").generation == "gen-1"
    assert answers(rig, 1) == {"supervisor": 1}
    # worker 0 has not read its push yet: its current is epoch 1, the word names 2, so it asks too; the
    # push comes before the reply on its channel, so a new boot (y) gets the new generation
    assert rig.ask(0, Y, "ipxe").generation == "gen-2"
    assert rig.workers[0].catalogs.current.generation == "gen-2"
    assert rig.sup.word.read() == (2, False)            # x still boots from epoch 1
    assert rig.ask(0, X, "image").generation == "gen-1"
    assert rig.ask(1, X, "runtime").generation == "gen-1"
    # x's boot is over and both workers have epoch 2: settled again, and workers answer alone
    assert rig.sup.word.read() == (2, True)
    assert rig.ask(0, X, "ipxe").generation == "gen-2"
    assert answers(rig, 0) == {"worker": 2, "supervisor": 2}


def test_an_abandoned_boot_on_the_old_generation_unsettles_until_its_pin_expires(rig):
    now = [1000.0]
    rig.sup.ledger.pins.clock = lambda: now[0]
    assert rig.ask(0, X, "ipxe").generation == "gen-1"     # x never asks again
    with rig.lock:
        rig.publish("gen-2")
    for worker in (0, 1):
        rig.read_pushes(worker)
    rig.workers[0].link.call("status_json")                 # x's pin and both acknowledgements applied
    with rig.lock:
        rig.sup.settle_expired()
        assert rig.sup.word.read() == (2, False)
        now[0] += rig.sup.ledger.pins.hold + 1
        rig.sup.settle_expired()                             # what the supervisor's 1 s check does
    assert rig.sup.word.read() == (2, True)
    assert rig.ask(1, Y, "ipxe").generation == "gen-2" and answers(rig, 1) == {"worker": 1}
