"""Boot pinning: a node that starts booting from one manifest generation finishes from it.

A publish while nodes boot must never give a node the image of one generation and the overlays of
the next (an image and its overlays are built to go together). A boot starts with the node's iPXE
script, fetched by HTTP (/ipxe) or by TFTP (`<mac>.ipxe`, see catalog.tftp_resolver), or with its
/kernel request when the script came from elsewhere; from then until its first
/runtime request (the last file of a boot: iPXE's, or the node agent's first in secure mode) or
`hold` seconds, the node's requests are answered from the catalog it started with. The old store
files are still on disk: publish keeps replaced files for a grace period longer than `hold`.
"""
import time

HOLD_SECONDS = 300    # below publish.GRACE_SECONDS (600): a pinned file is never collected


class BootPins:
    def __init__(self, hold=HOLD_SECONDS, clock=time.monotonic):
        self.hold = hold
        self.clock = clock
        self._pins = {}         # mac -> [catalog, pinned at, started by ("ipxe" or "kernel")]
        self._on = {}           # id(catalog) -> pins on it (expired ones too, until pruned)

    def _pin(self, mac, catalog, now, started_by):
        self._unpin(mac)
        self._pins[mac] = [catalog, now, started_by]
        self._on[id(catalog)] = self._on.get(id(catalog), 0) + 1

    def _unpin(self, mac):
        pin = self._pins.pop(mac, None)
        if pin is not None:
            left = self._on[id(pin[0])] - 1
            if left:
                self._on[id(pin[0])] = left
            else:
                del self._on[id(pin[0])]

    def catalog_for(self, mac, stage, current):
        """The catalog to answer `stage` for `mac` from, given the `current` one."""
        now = self.clock()
        pin = self._pins.get(mac)
        if pin is not None and now - pin[1] > self.hold:
            self._unpin(mac)
            pin = None
        if stage == "ipxe":
            self._pin(mac, current, now, "ipxe")
            return current
        if stage == "kernel":
            # The kernel right after the script belongs to that boot; any other kernel request
            # (TFTP-fetched script, an iPXE retry) starts a new boot on the current generation.
            if pin is not None and pin[2] == "ipxe":
                pin[2] = "kernel"
                return pin[0]
            self._pin(mac, current, now, "kernel")
            return current
        if pin is None:
            return current
        if stage == "runtime":
            self._unpin(mac)        # the boot is complete: the agent's refreshes get what is current
        return pin[0]

    def pinned(self, mac, current):
        """The catalog `mac` is pinned to, else `current`; never starts, moves or ends a pin."""
        pin = self._pins.get(mac)
        if pin is None or self.clock() - pin[1] > self.hold:
            return current
        return pin[0]

    def prune(self):
        """Forget pins older than `hold` (called when a new manifest is swapped in)."""
        now = self.clock()
        for mac in [m for m, pin in self._pins.items() if now - pin[1] > self.hold]:
            self._unpin(mac)

    def catalogs(self):
        """The catalogs pins hold now (serve's supervisor keeps them for its workers)."""
        return [pin[0] for pin in self._pins.values()]

    def all_on(self, catalog):
        """True when every pin (expired ones not yet pruned included) is on `catalog`."""
        return self._on.get(id(catalog), 0) == len(self._pins)

    def __len__(self):
        return len(self._pins)
