"""Compress archives file to file: zstd (what nodes boot) and gzip (iPXE imgextract, old kernels).

Both read the input in large blocks and use every core, and both give the same bytes whatever the
thread count, so content hashes of the outputs are reproducible.

zstd: one frame per archive (the kernel unpacks one stream per call and wants it to end on a cpio
record boundary, performance.md 2.2), the content size in the frame header, a checksum, and a
window of at most 128 MiB (ZSTD_WINDOWLOG_MAX of kernels 5.9-5.15; the node allocates the window).

gzip: one member made the way pigz makes it: fixed-size blocks deflated in parallel, each primed
with the previous block's last 32 KiB as a dictionary and ended on a byte boundary by a sync
flush, the last one finished; any gunzip, the kernel and iPXE read it as a plain gzip stream.
"""
import collections
import concurrent.futures
import os
import struct
import zlib

import zstandard

ZSTD_WINDOW_LOG_MAX = 27          # 128 MiB: the largest window every zstd-capable kernel unpacks
READ_SIZE = 4 << 20               # large reads: per-call overhead vanishes, page cache copies dominate
WRITE_SIZE = 1 << 20
GZIP_BLOCK = 1 << 20              # deflate unit handed to a thread (pigz uses 128 KiB; larger = fewer calls)
GZIP_DICT = 32 << 10              # deflate's window: the most of the previous block a block can refer to
GZIP_LEVEL = 6                    # gzip's and pigz's default, Warewulf's level


def resolve_threads(threads):
    """Settings say 0 for 'all cores'; zstd and the gzip pool want a count >= 1.

    Always >= 1 even on one core: zstd's single-threaded mode (0 workers) may emit different bytes
    than its multithreaded mode, while 1..N workers give identical frames.
    """
    if threads and threads > 0:
        return int(threads)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def zstd_params(level, threads):
    """Compression parameters for `level`, with the window capped for the kernel.

    zstd shrinks the window by itself for inputs smaller than it (the frame header then says so).
    """
    window_log = zstandard.ZstdCompressionParameters.from_level(level).window_log
    return zstandard.ZstdCompressionParameters.from_level(
        level, window_log=min(window_log, ZSTD_WINDOW_LOG_MAX), threads=resolve_threads(threads),
        write_content_size=1, write_checksum=1, write_dict_id=0)


def _read_blocks(src, block):
    """Yield successive blocks of `src` (a binary file object) until EOF."""
    while True:
        chunk = src.read(block)
        if not chunk:
            return
        yield chunk


class ZstdEncoder:
    """One zstd context reused for many files (not thread-safe: one file at a time)."""

    def __init__(self, level=3, threads=0):
        self.cctx = zstandard.ZstdCompressor(compression_params=zstd_params(level, threads))

    def stream(self, dst, size):
        """A writer whose input, `size` bytes written in pieces of any length, becomes one zstd frame
        in `dst`; close() ends the frame. The bytes do not depend on how the input is cut."""
        # The GIL is released inside write(), so the workers keep every core busy while we read.
        return self.cctx.stream_writer(dst, size=size, write_size=WRITE_SIZE, closefd=False)

    def compress(self, src, dst, size, progress=None, tap=None):
        """Compress `size` bytes of `src` into one zstd frame written to `dst`; return bytes written.

        `src`, `dst`: binary file objects. `size` is pledged in the frame header (the kernel and
        `zstd -l` show it); a source of another length raises zstandard.ZstdError.
        `progress(n)` is called with the input bytes consumed so far, block by block; `tap(block)`
        sees every input block (a hash of the input costs no second read).
        """
        counter = _CountingWriter(dst)
        done = 0
        with self.stream(counter, size) as writer:
            for chunk in _read_blocks(src, READ_SIZE):
                writer.write(chunk)
                if tap:
                    tap(chunk)       # hashlib drops the GIL too: the hash runs beside the workers
                done += len(chunk)
                if progress:
                    progress(done)
        return counter.written


def compress_zstd(src, dst, size, level=3, threads=0, progress=None):
    """ZstdEncoder(level, threads).compress(...) for a single file."""
    return ZstdEncoder(level, threads).compress(src, dst, size, progress)


class _CountingWriter:
    """A write-only file object that counts the bytes passing through to `raw`."""

    def __init__(self, raw):
        self.raw = raw
        self.written = 0

    def write(self, data):
        self.raw.write(data)
        self.written += len(data)
        return len(data)

    def flush(self):
        self.raw.flush()


def _deflate_block(block, dictionary, level, last):
    """Raw deflate of one block, primed with the previous block's tail; byte-aligned end."""
    if dictionary:
        comp = zlib.compressobj(level, zlib.DEFLATED, -15, 8, zlib.Z_DEFAULT_STRATEGY, dictionary)
    else:
        comp = zlib.compressobj(level, zlib.DEFLATED, -15, 8, zlib.Z_DEFAULT_STRATEGY)
    return comp.compress(block) + comp.flush(zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH)


def gzip_header(level):
    # mtime 0 and no name: same input, same bytes. XFL 2 = best, 4 = fastest; OS 3 = Unix.
    xfl = 2 if level >= 9 else (4 if level <= 1 else 0)
    return b"\x1f\x8b\x08\x00\x00\x00\x00\x00" + bytes((xfl, 3))


class GzipEncoder:
    """pigz's method in Python threads (zlib releases the GIL while it deflates)."""

    def __init__(self, level=GZIP_LEVEL, threads=0):
        self.level = level
        self.workers = resolve_threads(threads)

    def stream(self, dst, after=None):
        """A GzipStream into `dst` (input written in pieces; close() ends the member), continuing
        `after` (a GzipPrefix) when given."""
        return GzipStream(dst, self.level, self.workers, after)

    def prefix(self, data):
        """`data` deflated once as the head of members that go on with other bytes (GzipPrefix)."""
        return GzipPrefix(data, self.level)

    def compress(self, src, dst, size=None, progress=None, after=None):
        """Compress `src` into one gzip member written to `dst`; return bytes written.

        `size` is not needed (gzip has no length up front); it keeps the call shape of zstd's.
        `after`: a GzipPrefix whose bytes the member holds first (deflated once, however many members).
        """
        stream = self.stream(dst, after)
        for block in _read_blocks(src, GZIP_BLOCK):
            stream.write(block)
            if progress:
                progress(stream.total + len(stream.pending))
        return stream.close()


class GzipPrefix:
    """Bytes deflated once to head many gzip members (a secure-mode system archive's shared part): its
    blocks, none final, each ended on a byte boundary, with the CRC, length and last 32 KiB a member
    needs to go on. A member made with it is one member, as iPXE's imgextract wants (it reads one)."""

    def __init__(self, data, level=GZIP_LEVEL):
        blocks = [data[i:i + GZIP_BLOCK] for i in range(0, len(data), GZIP_BLOCK)] or [b""]
        tails = [b""] + [block[-GZIP_DICT:] for block in blocks[:-1]]
        self.body = b"".join(_deflate_block(block, tail, level, False) for block, tail in zip(blocks, tails))
        self.crc, self.total, self.tail = zlib.crc32(data), len(data), data[-GZIP_DICT:]


class GzipStream:
    """One gzip member of input written in pieces of any length: cut into GZIP_BLOCK blocks from the
    start, so the bytes are GzipEncoder's for the same input however it arrives. A block is deflated
    (by a thread) once the next one has begun: the look-ahead tells which block is the last. With
    `after` (a GzipPrefix) the member holds its bytes first and the blocks are cut from where it ends."""

    def __init__(self, dst, level=GZIP_LEVEL, workers=1, after=None):
        self.out = _CountingWriter(dst)
        self.level, self.workers = level, max(1, workers)
        self.pending = bytearray()
        self.crc = self.total = 0
        self.tail = b""
        self.jobs = collections.deque()
        self.pool = None
        self.out.write(gzip_header(level))
        if after is not None:
            self.out.write(after.body)
            self.crc, self.total, self.tail = after.crc, after.total, after.tail

    def write(self, data):
        self.pending += data
        while len(self.pending) > GZIP_BLOCK:
            block = bytes(self.pending[:GZIP_BLOCK])
            del self.pending[:GZIP_BLOCK]
            self._submit(block, last=False)
        return len(data)

    def _submit(self, block, last):
        if self.pool is None:
            self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=self.workers)
        self.jobs.append(self.pool.submit(_deflate_block, block, self.tail, self.level, last))
        self.crc = zlib.crc32(block, self.crc)             # zlib drops the GIL here too
        self.total += len(block)
        self.tail = block[-GZIP_DICT:]
        while len(self.jobs) > 2 * self.workers:          # bounded memory: a few blocks in flight
            self.out.write(self.jobs.popleft().result())

    def close(self):
        """Deflate the last block, write the trailer; returns the bytes written (header included)."""
        block = bytes(self.pending)
        self.pending = bytearray()
        if self.pool is None:    # one block (most overlays): no threads to start
            self.out.write(_deflate_block(block, self.tail, self.level, True))
            self.crc, self.total = zlib.crc32(block, self.crc), self.total + len(block)
        else:
            self._submit(block, last=True)
            while self.jobs:
                self.out.write(self.jobs.popleft().result())
            self.pool.shutdown()
        self.out.write(struct.pack("<II", self.crc, self.total & 0xFFFFFFFF))
        return self.out.written


def compress_gzip(src, dst, size=None, level=GZIP_LEVEL, threads=0, progress=None):
    """GzipEncoder(level, threads).compress(...) for a single file."""
    return GzipEncoder(level, threads).compress(src, dst, size, progress)
