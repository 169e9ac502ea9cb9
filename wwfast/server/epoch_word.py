"""The epoch word: one 64-bit word in a memfd that serve's supervisor writes and its workers read.

It names the manifest epoch the supervisor serves as current and says whether the boot pins are
*settled*: every worker has that epoch and every pin the supervisor holds is on it. While settled, a
worker whose own current epoch is the one named can answer "which catalog for this node?" alone (the
answer can only be current) and tell the supervisor afterwards; that takes a memory read instead of
a round trip through the supervisor per request, which in a boot storm stalled each worker's loop
(wwfast.server.remote). The supervisor unsettles the word *before* it pushes a new manifest, so no
worker answers alone from an epoch that is no longer current; it settles it again only when every
worker has acknowledged the new one and the old epoch's pins are gone.
"""
import ctypes
import mmap
import os

SETTLED = 1


class EpochWord:
    def __init__(self, fd):
        self.fd = fd
        self._map = mmap.mmap(fd, mmap.PAGESIZE)
        self._word = ctypes.c_uint64.from_buffer(self._map)     # aligned: one load or store

    @classmethod
    def create(cls):
        """A new word (epoch 0, not settled), for the supervisor; pass `fd` to each worker."""
        fd = os.memfd_create("wwfast-epoch-word", os.MFD_CLOEXEC)
        os.ftruncate(fd, mmap.PAGESIZE)
        return cls(fd)

    def set(self, epoch, settled):
        self._word.value = (epoch << 1) | (SETTLED if settled else 0)

    def read(self):
        """(epoch, settled)."""
        value = self._word.value
        return value >> 1, bool(value & SETTLED)

    def settled_on(self, epoch):
        """True when `epoch` is current and the pins are settled on it."""
        return self._word.value == (epoch << 1) | SETTLED
