"""The boot ledger: everything serve knows about the nodes' boots, in one place for both protocols.

HTTP and TFTP report here and nowhere else: a request that starts or continues a boot (pins: the
catalog the node's boot is answered from), a transfer that begins and ends (status: what each node
fetched, boot start and end), and the counters of /metrics. The provisioning routes read it back
for /status and /metrics.
"""
import itertools
import json
import logging
import time

from wwfast.server.bootrecord import CAP, encoding_of
from wwfast.server.metrics import Metrics
from wwfast.server.pins import HOLD_SECONDS, BootPins
from wwfast.server.status import StatusBook, blank

log = logging.getLogger("wwfast.serve")


class Transfer:
    """One node request being answered with a file; handed back to `BootLedger.ended`."""
    __slots__ = ("node_id", "seq", "stage", "code", "length", "method")

    def __init__(self, node_id, seq, stage, code, length, method):
        self.node_id, self.seq, self.stage, self.code, self.length = node_id, seq, stage, code, length
        self.method = method

    def finishes_boot(self, sent, complete):
        """A whole runtime overlay went out: the node has everything it boots from (a range of it is not)."""
        return (self.stage == "runtime" and complete and sent == self.length and self.method != "HEAD"
                and self.code == 200)


class BootLedger:
    """Events in (began / ended / refused), status, boot records and metrics out.

    Each event becomes one plain tuple handed to `apply` (JSON-able: a worker process may forward
    it to the process that keeps the book instead, and that one applies it):
        ("began",   node_id, request)        request: a boot record request (wwfast.server.bootrecord)
        ("refused", node_id, request)
        ("ended",   node_id, seq, at, sent, complete, reason, finishes)
    `seq` numbers a ledger's requests from `first_seq` (workers: give each its own range).
    """

    def __init__(self, state_dir, status_debounce=1.0, pin_hold=HOLD_SECONDS, clock=time.time, first_seq=1):
        self.pins = BootPins(hold=pin_hold)   # a node finishes its boot from the generation it started with
        self.status = StatusBook(state_dir, debounce=status_debounce, clock=clock)
        self.metrics = Metrics()
        self.clock = clock
        self._seq = itertools.count(first_seq)

    # -- pins --------------------------------------------------------------------------------
    def catalog_for(self, mac, stage, current):
        """The catalog to answer `stage` for `mac` from (starts, continues or ends the node's boot)."""
        return self.pins.catalog_for(mac, stage, current)

    def pinned(self, mac, current):
        """The catalog `mac` is pinned to, else `current`; never moves a pin."""
        return self.pins.pinned(mac, current)

    def manifest_swapped(self):
        self.metrics.reloads += 1
        self.pins.prune()

    # -- node requests -----------------------------------------------------------------------
    def began(self, node_id, stage, file_name, client_host, code=200, length=0, *, generation="",
              protocol="http", method="GET"):
        """`node_id` is being sent `file_name` for `stage` (`length` bytes; by HTTP, or its script by TFTP):
        its boot record gets the request, and a script or a boot's first kernel starts a boot.
        Returns the Transfer to hand to `ended` when the transport is done with it."""
        seq = next(self._seq)
        self.apply(("began", node_id, self._request(seq, stage, file_name, client_host, generation, protocol,
                                                    method, code=code, length=length)))
        return Transfer(node_id, seq, stage, code, length, method)

    def refused(self, node_id, stage, marker, client_host, *, generation="", protocol="http", method="GET",
                code=0):
        """A node's request was refused: `marker` (BAD_ASSET, BAD_PORT, NOT_TLS, NOT_FOUND) shows in /status."""
        request = self._request(next(self._seq), stage, "", client_host, generation, protocol, method, code=code)
        request.update({"end": request["start"], "result": "refused", "reason": marker})
        self.apply(("refused", node_id, request))

    def ended(self, transfer, sent, complete, reason="", at=None):
        """The transport is done with a transfer: `sent` bytes went out, `complete` when every byte did
        (else `reason` may say why it was cut short); `at`: when its last send began (else now)."""
        at = self.clock() if at is None else at
        self.apply(("ended", transfer.node_id, transfer.seq, at, sent, bool(complete),
                    "" if complete else (reason or "connection closed"),
                    transfer.finishes_boot(sent, complete)))

    def _request(self, seq, stage, file_name, client_host, generation, protocol, method, code=200, length=0):
        return {"seq": seq, "stage": stage, "file": file_name, "encoding": encoding_of(file_name) if file_name else "",
                "method": method, "code": code, "length": length, "bytes": 0, "start": self.clock(), "end": None,
                "result": None, "reason": "", "generation": generation, "client": client_host,
                "protocol": protocol}

    def apply(self, event):
        """Record one event (see the class comment)."""
        kind, node_id = event[0], event[1]
        if not node_id:
            return
        if kind == "began":
            self.status.began(node_id, event[2])
        elif kind == "refused":
            self.status.refused(node_id, event[2])
        elif kind == "ended":
            duration = self.status.ended(node_id, *event[2:])
            if duration is not None:
                self.metrics.boot.observe(duration)
                log.info("%s booted in %.1f s", node_id, duration)
        else:
            log.error("boot ledger: unknown event %r", kind)

    # -- reading it back ---------------------------------------------------------------------
    def status_document(self, catalog):
        doc = self.status.snapshot(catalog.nodes)
        doc["generation"] = catalog.generation
        doc["update interval"] = catalog.update_interval
        doc["unserved"] = dict(sorted(catalog.unserved.items()))   # node -> why the manifest's entry is not served
        doc["now"] = time.time()
        return doc

    def status_json(self, catalog):
        return (json.dumps(self.status_document(catalog), sort_keys=True, indent=1) + "\n").encode()

    def node_document(self, catalog, node_id):
        """One node's status with its boot records ("boot": the current one, "last boot"), or None for a
        node neither in the manifest nor ever seen."""
        rec = self.status.record(node_id)
        if rec is None:
            if node_id not in catalog.nodes and node_id not in catalog.unserved:
                return None
            rec = blank(node_id)
        rec.setdefault("boot", None)
        rec.setdefault("last boot", None)
        rec.update({"node": node_id, "generation": catalog.generation, "update interval": catalog.update_interval,
                    "now": time.time(), "cap": CAP})
        if node_id in catalog.unserved:
            rec["unserved"] = catalog.unserved[node_id]
        return rec

    def metrics_text(self, catalog):
        return self.metrics.render(self.status.by_stage(catalog.nodes), catalog.generation, len(catalog.unserved))

    # -- lifecycle -----------------------------------------------------------------------------
    def attach(self, loop):
        self.status.attach(loop)

    async def close(self):
        await self.status.close()
