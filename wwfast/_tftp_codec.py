"""TFTP request parsing, option negotiation and packet building (shared by both twins).

This runs once per transfer (the RRQ), not per DATA packet, so it stays in plain
Python; the per-packet path lives in the session tables of `_tftp` / `_tftp_py`.
RFCs: 1350 (base), 2347 (options, OACK, error 8), 2348 (blksize), 2349 (timeout,
tsize), 7440 (windowsize).
"""
import struct

RRQ, WRQ, DATA, ACK, ERROR, OACK = 1, 2, 3, 4, 5, 6

ERR_UNDEFINED = 0
ERR_NOT_FOUND = 1
ERR_ACCESS = 2
ERR_DISK_FULL = 3
ERR_ILLEGAL = 4
ERR_UNKNOWN_TID = 5
ERR_EXISTS = 6
ERR_NO_USER = 7
ERR_OPTIONS = 8

MIN_BLKSIZE = 8
MAX_BLKSIZE = 65464
DEFAULT_BLKSIZE = 512
# RFC 7440 allows 65535; past ~64 throughput levels out and some clients break,
# and the OACK may lower the value (the client must accept it).
MAX_WINDOWSIZE = 64
# A window goes out in one burst: keep it within what socket buffers hold on both
# ends (1432 x 64 = 92 KB passes; blksize 65464 gets a window of 2).
MAX_WINDOW_BYTES = 128 << 10
MODES = ("octet", "netascii")


class TftpError(Exception):
    """A request the server answers with an ERROR packet (code, message)."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code
        self.message = message


class Request:
    __slots__ = ("opcode", "filename", "mode", "options")

    def __init__(self, opcode, filename, mode, options):
        self.opcode = opcode
        self.filename = filename
        self.mode = mode
        self.options = options

    def __repr__(self):
        return f"Request({self.opcode}, {self.filename!r}, {self.mode!r}, {self.options!r})"


def parse_request(packet):
    """Decode an RRQ/WRQ: `opcode | filename 0 | mode 0 | (option 0 value 0)*`.

    Option names are lower-cased; a repeated option keeps its first value; a name
    without a value (some ROMs pad requests with NULs) is ignored. Raises TftpError.
    """
    packet = bytes(packet)
    if len(packet) < 2:
        raise TftpError(ERR_ILLEGAL, "truncated packet")
    opcode = (packet[0] << 8) | packet[1]
    if opcode not in (RRQ, WRQ):
        raise TftpError(ERR_ILLEGAL, f"opcode {opcode} is not a request")
    fields = packet[2:].split(b"\0")
    if len(fields) < 3:
        raise TftpError(ERR_ILLEGAL, "request without a NUL-terminated file name and mode")
    fields.pop()  # what follows the last NUL: must be nothing...
    if packet[-1] != 0:
        raise TftpError(ERR_ILLEGAL, "request not NUL-terminated")
    filename = fields[0].decode("utf-8", "surrogateescape")
    if not filename:
        raise TftpError(ERR_ILLEGAL, "empty file name")
    mode = fields[1].decode("ascii", "replace").lower()
    if mode not in MODES:
        raise TftpError(ERR_ILLEGAL, f"unsupported transfer mode {mode!r}")
    options = {}
    rest = fields[2:]
    for i in range(0, len(rest) - 1, 2):
        name = rest[i].decode("ascii", "replace").lower()
        if name and name not in options:
            options[name] = rest[i + 1].decode("ascii", "replace")
    return Request(opcode, filename, mode, options)


def _integer(options, name, low, high):
    text = options[name].strip()
    if not text.isdigit():
        raise TftpError(ERR_OPTIONS, f"option {name}: {options[name]!r} is not a number")
    value = int(text)
    if value < low or (high is not None and value > high):
        raise TftpError(ERR_OPTIONS, f"option {name}: {value} out of range {low}..{high or ''}")
    return value


def negotiate(options, size, max_blksize=MAX_BLKSIZE, max_windowsize=MAX_WINDOWSIZE):
    """Return (blksize, windowsize, timeout, oack) for the options of an RRQ.

    `timeout` is 0 when the client did not ask (the server default applies);
    `oack` is the OACK packet (bytes) or None when no known option was asked, in
    which case DATA 1 is the answer (RFC 2347). Unknown options are left out of
    the OACK; malformed values of known ones raise TftpError(8).
    """
    blksize, windowsize, timeout = DEFAULT_BLKSIZE, 1, 0
    accepted = []
    for name in options:
        if name == "blksize":
            blksize = min(_integer(options, name, MIN_BLKSIZE, None), max_blksize)
            accepted.append((name, str(blksize)))
        elif name == "windowsize":
            windowsize = min(_integer(options, name, 1, 65535), max_windowsize)
            accepted.append((name, str(windowsize)))
        elif name == "timeout":
            timeout = _integer(options, name, 1, 255)  # RFC 2349: echoed unchanged
            accepted.append((name, str(timeout)))
        elif name == "tsize":
            # An RRQ asks with "0" (atftp sends "enable"): the answer is the size either way.
            accepted.append((name, str(size)))
    if windowsize * blksize > MAX_WINDOW_BYTES:
        windowsize = max(1, MAX_WINDOW_BYTES // blksize)
        accepted = [(k, str(windowsize) if k == "windowsize" else v) for k, v in accepted]
    return blksize, windowsize, timeout, (build_oack(accepted) if accepted else None)


def build_oack(options):
    """OACK from (name, value) pairs or a dict, in the given order."""
    pairs = options.items() if isinstance(options, dict) else options
    return b"\0\6" + b"".join(f"{k}\0{v}\0".encode("ascii") for k, v in pairs)


def build_error(code, message):
    return struct.pack("!HH", ERROR, code) + message.encode("ascii", "replace") + b"\0"


def build_data(block, payload):
    return struct.pack("!HH", DATA, block & 0xFFFF) + bytes(payload)


def build_ack(block):
    return struct.pack("!HH", ACK, block & 0xFFFF)


def to_netascii(data):
    """RFC 764 line ends: LF -> CR LF, a bare CR -> CR NUL."""
    return bytes(data).replace(b"\r", b"\r\0").replace(b"\n", b"\r\n")
