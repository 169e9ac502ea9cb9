"""A node's record is placed by when its requests happened, not by when their events arrived.

With `serve --workers N` a node's requests can go to different workers (the node agent's runtime
overlay comes on a connection of its own), and the supervisor may read one worker's events a pass
after another's later ones. Seen in a storm on a loaded machine: two nodes whose /status showed the
system overlay as their last file although they had fetched the runtime overlay after it. Here the
events are made by real worker-side ledgers and applied to the book in the order chosen by the test.
"""
import json
import os

from wwfast.server.ledger import BootLedger
from wwfast.server.status import StatusBook


class Worker:
    """A worker's ledger whose events are kept for the test to deliver; its clock is the test's."""

    def __init__(self, state, first_seq, clock):
        self.events = []
        self.ledger = BootLedger(state, first_seq=first_seq, clock=lambda: clock[0])
        self.ledger.apply = self.events.append

    def take(self):
        out = list(self.events)
        self.events.clear()      # in place: the ledger appends to this very list
        return out


def boot_events(state, runtime_first):
    """Events of one boot: script, kernel, image and system overlay on worker 0, then the runtime
    overlay on worker 1; with `runtime_first` worker 1's events reach the book before worker 0's
    system overlay events."""
    clock = [100.0]
    w0, w1 = Worker(state, 1, clock), Worker(state, 1000, clock)
    for stage, name in (("ipxe", "n1.ipxe"), ("kernel", "k.kernel"), ("image", "i.cpio.zst")):
        transfer = w0.ledger.began("n1", stage, name, "10.0.0.1", length=10)
        clock[0] += 1
        w0.ledger.ended(transfer, 10, True)
    early = w0.take()
    system = w0.ledger.began("n1", "system", "s.cpio.zst", "10.0.0.1", length=10)
    clock[0] += 1
    w0.ledger.ended(system, 10, True)
    late_system = w0.take()
    clock[0] += 0.5
    runtime = w1.ledger.began("n1", "runtime", "r.cpio.zst", "10.0.0.1", length=10)
    clock[0] += 1
    w1.ledger.ended(runtime, 10, True)
    runtime_events = w1.take()
    return early + (runtime_events + late_system if runtime_first else late_system + runtime_events)


def record_after(tmp_path, events):
    book = BootLedger(str(tmp_path / "book"))
    for event in events:
        book.apply(event)
    return book.status.record("n1")


def test_a_runtime_overlay_reported_before_the_system_overlay_is_still_the_last_file(tmp_path):
    in_order = record_after(tmp_path, boot_events(str(tmp_path), runtime_first=False))
    reordered = record_after(tmp_path, boot_events(str(tmp_path), runtime_first=True))
    for rec in (in_order, reordered):
        assert (rec["stage"], rec["sent"]) == ("runtime", "r.cpio.zst"), rec
        assert (rec["boot start"], rec["boot end"], rec["last seen"]) == (100.0, 105.5, 105.5), rec
        boot = rec["boot"]
        assert [r["stage"] for r in boot["requests"]] == ["ipxe", "kernel", "image", "system", "runtime"]
        assert [r["result"] for r in boot["requests"]] == ["ok"] * 5
        assert boot["booted"] == 5 and boot["end"] == 105.5, boot     # the runtime overlay ended it
    assert reordered == in_order


def test_a_script_reported_after_its_kernel_starts_that_boot_not_a_new_one(tmp_path):
    clock = [200.0]
    w0, w1 = Worker(str(tmp_path), 1, clock), Worker(str(tmp_path), 1000, clock)
    w0.ledger.began("n1", "ipxe", "n1.ipxe", "10.0.0.1")
    clock[0] += 0.5
    w1.ledger.began("n1", "kernel", "k.kernel", "10.0.0.1")
    rec = record_after(tmp_path, w1.take() + w0.take())
    assert rec["boot start"] == 200.0 and rec["boot"]["start"] == 200.0, rec
    assert [r["stage"] for r in rec["boot"]["requests"]] == ["ipxe", "kernel"]
    assert rec["last boot"] is None
    assert (rec["stage"], rec["sent"]) == ("kernel", "k.kernel")


def test_a_saved_record_with_damaged_times_takes_new_events(tmp_path):
    state = str(tmp_path)
    os.makedirs(os.path.join(state, "serve"))
    with open(os.path.join(state, "serve", "status.json"), "w") as f:
        json.dump({"format": 1, "nodes": {"n1": {"node name": "n1", "last seen": "yesterday",
                                                  "boot start": [1], "boot end": None}}}, f)
    book = StatusBook(state)
    assert {k: book.nodes["n1"][k] for k in ("last seen", "boot start", "boot end")} == \
        {"last seen": 0, "boot start": 0, "boot end": 0}
    clock = [300.0]
    w0 = Worker(state, 1, clock)
    w0.ledger.began("n1", "ipxe", "n1.ipxe", "10.0.0.1")
    for event in w0.take():
        book.began(event[1], event[2])
    rec = book.record("n1")
    assert (rec["stage"], rec["boot start"], rec["last seen"]) == ("ipxe", 300.0, 300.0)


def test_a_reboot_whose_script_is_reported_after_its_kernel_takes_the_kernel_from_the_hung_boot(tmp_path):
    """The node's last boot never finished (it hung after its kernel); it reboots, and its new script's
    event arrives after the new kernel's: the kernel belongs to the new boot, not the hung one."""
    clock = [100.0]
    w0, w1 = Worker(str(tmp_path), 1, clock), Worker(str(tmp_path), 1000, clock)
    w0.ledger.began("n1", "ipxe", "n1.ipxe", "10.0.0.1")
    clock[0] = 101.0
    w0.ledger.began("n1", "kernel", "k.kernel", "10.0.0.1")
    hung = w0.take()
    clock[0] = 200.0
    w0.ledger.began("n1", "ipxe", "n1.ipxe", "10.0.0.1")
    clock[0] = 200.5
    w1.ledger.began("n1", "kernel", "k2.kernel", "10.0.0.1")
    rec = record_after(tmp_path, hung + w1.take() + w0.take())
    assert rec["boot start"] == 200.0 and rec["boot end"] == 0
    assert [(r["stage"], r["start"]) for r in rec["boot"]["requests"]] == [("ipxe", 200.0), ("kernel", 200.5)]
    assert [(r["stage"], r["start"]) for r in rec["last boot"]["requests"]] == [("ipxe", 100.0), ("kernel", 101.0)]
    assert (rec["stage"], rec["sent"]) == ("kernel", "k2.kernel")


def test_a_clock_stepped_back_is_not_taken_for_events_out_of_order(tmp_path):
    """Only events within REORDER_SECONDS of each other are reordered: after the server's clock steps
    back an hour (NTP), new requests still show and a new script still starts a new boot."""
    clock = [5000.0]
    w0 = Worker(str(tmp_path), 1, clock)
    w0.ledger.began("n1", "ipxe", "n1.ipxe", "10.0.0.1")
    clock[0] = 5001.0
    w0.ledger.began("n1", "kernel", "k.kernel", "10.0.0.1")
    clock[0] = 1400.0
    w0.ledger.began("n1", "ipxe", "n1.ipxe", "10.0.0.1")
    clock[0] = 1401.0
    w0.ledger.began("n1", "kernel", "k2.kernel", "10.0.0.1")
    rec = record_after(tmp_path, w0.take())
    shown = (rec["stage"], rec["sent"], rec["last seen"], rec["boot start"])
    assert shown == ("kernel", "k2.kernel", 1401.0, 1400.0)
    assert [(r["stage"], r["start"]) for r in rec["boot"]["requests"]] == [("ipxe", 1400.0), ("kernel", 1401.0)]
    assert [r["start"] for r in rec["last boot"]["requests"]] == [5000.0, 5001.0]
