"""Boot pinning (wwfast.server.pins): a node finishes its boot from the catalog it started with.

The end-to-end proof with real nodes and a real publish mid-boot is in test_e2e_boot.py; these pin
down the rules: what starts a boot, what ends it, expiry.
"""
from wwfast.server.pins import BootPins

MAC = "52:54:00:00:00:01"
OTHER = "52:54:00:00:00:02"


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_a_boot_started_by_ipxe_keeps_its_catalog_until_runtime():
    pins = BootPins(clock=Clock())
    assert pins.catalog_for(MAC, "ipxe", "A") == "A"
    assert pins.catalog_for(MAC, "kernel", "B") == "A"
    assert pins.catalog_for(MAC, "image", "B") == "A"
    assert pins.catalog_for(MAC, "system", "B") == "A"
    assert pins.catalog_for(MAC, "runtime", "B") == "A"
    # Boot over: the node agent's refreshes get the current generation.
    assert pins.catalog_for(MAC, "runtime", "B") == "B"
    assert len(pins) == 0


def test_a_tftp_boot_is_pinned_from_its_kernel_request():
    pins = BootPins(clock=Clock())
    assert pins.catalog_for(MAC, "kernel", "A") == "A"
    assert pins.catalog_for(MAC, "image", "B") == "A"
    assert pins.catalog_for(MAC, "system", "B") == "A"


def test_a_second_kernel_request_starts_a_new_boot():
    pins = BootPins(clock=Clock())
    pins.catalog_for(MAC, "ipxe", "A")
    pins.catalog_for(MAC, "kernel", "A")
    # iPXE retried (imgfree, goto retry) or the node rebooted: a new boot on what is current.
    assert pins.catalog_for(MAC, "kernel", "B") == "B"
    assert pins.catalog_for(MAC, "image", "C") == "B"


def test_nodes_are_pinned_independently():
    pins = BootPins(clock=Clock())
    pins.catalog_for(MAC, "ipxe", "A")
    assert pins.catalog_for(OTHER, "image", "B") == "B"
    assert pins.catalog_for(OTHER, "ipxe", "B") == "B"
    assert pins.catalog_for(MAC, "image", "C") == "A"
    assert pins.catalog_for(OTHER, "image", "C") == "B"


def test_an_abandoned_boot_expires():
    clock = Clock()
    pins = BootPins(hold=300, clock=clock)
    pins.catalog_for(MAC, "ipxe", "A")
    clock.now += 301
    assert pins.catalog_for(MAC, "image", "B") == "B"
    pins.catalog_for(OTHER, "kernel", "A")
    clock.now += 301
    pins.prune()
    assert len(pins) == 0


def test_requests_without_a_boot_get_the_current_catalog():
    pins = BootPins(clock=Clock())
    assert pins.catalog_for(MAC, "system", "A") == "A"
    assert pins.catalog_for(MAC, "runtime", "B") == "B"
    assert len(pins) == 0
