"""The boot ledger: everything serve knows about the nodes' boots, in one place for both protocols.

HTTP and TFTP report here and nowhere else: a request that starts or continues a boot (pins: the
catalog the node's boot is answered from), a transfer that begins and ends (status: what each node
fetched, boot start and end), and the counters of /metrics. The provisioning routes read it back
for /status and /metrics.
"""
import json
import logging
import time

from wwfast.server.metrics import Metrics
from wwfast.server.pins import HOLD_SECONDS, BootPins
from wwfast.server.status import StatusBook

log = logging.getLogger("wwfast.serve")


class Transfer:
    """One node request being answered with a file; handed back to `BootLedger.ended`."""
    __slots__ = ("node_id", "stage", "code", "length")

    def __init__(self, node_id, stage, code, length):
        self.node_id, self.stage, self.code, self.length = node_id, stage, code, length


class BootLedger:
    def __init__(self, state_dir, status_debounce=1.0, pin_hold=HOLD_SECONDS, clock=time.time):
        self.pins = BootPins(hold=pin_hold)   # a node finishes its boot from the generation it started with
        self.status = StatusBook(state_dir, debounce=status_debounce, clock=clock)
        self.metrics = Metrics()

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
    def began(self, node_id, stage, file_name, client_host, code=200, length=0):
        """`node_id` is being sent `file_name` for `stage` (by HTTP, or its script by TFTP): /status shows
        it, and a script or a boot's first kernel starts the node's boot. Returns the Transfer to end."""
        self.status.requested(node_id, stage, file_name, client_host)
        return Transfer(node_id, stage, code, length)

    def refused(self, node_id, stage, marker, client_host):
        """A node's request was refused: `marker` (BAD_ASSET, BAD_PORT, NOT_FOUND) shows in /status."""
        self.status.requested(node_id, stage, marker, client_host, ok=False)

    def ended(self, transfer, sent, complete):
        """The transport is done with a transfer: `sent` bytes, `complete` when every byte went out."""
        if transfer.node_id and complete and sent == transfer.length:
            duration = self.status.completed(transfer.node_id, transfer.stage)
            if duration is not None:
                self.metrics.boot.observe(duration)
                log.info("%s booted in %.1f s", transfer.node_id, duration)

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

    def metrics_text(self, catalog):
        return self.metrics.render(self.status.by_stage(catalog.nodes), catalog.generation, len(catalog.unserved))

    # -- lifecycle -----------------------------------------------------------------------------
    def attach(self, loop):
        self.status.attach(loop)

    async def close(self):
        await self.status.close()
