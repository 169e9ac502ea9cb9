"""TFTP core: request codec, option negotiation and the session table (facade).

`wwfast._tftp` (Cython) when it imports, else `wwfast._tftp_py`; `WWFAST_PURE=1`
forces the pure twin. The asyncio glue is `wwfast.server.tftp.TftpServer`.
"""
import os

from wwfast._impl import pick

# The compiled table keeps its columns in numpy arrays and does no linear algebra: without this, each
# serve process that imports numpy starts one OpenBLAS thread per core that it never uses.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
_core, COMPILED = pick("wwfast._tftp", "wwfast._tftp_py")

SessionTable = _core.SessionTable
TftpError = _core.TftpError
Request = _core.Request
parse_request = _core.parse_request
negotiate = _core.negotiate
build_error = _core.build_error
build_oack = _core.build_oack
build_data = _core.build_data
build_ack = _core.build_ack
to_netascii = _core.to_netascii
RRQ, WRQ, DATA, ACK, ERROR, OACK = _core.RRQ, _core.WRQ, _core.DATA, _core.ACK, _core.ERROR, _core.OACK
ERR_UNDEFINED, ERR_NOT_FOUND, ERR_ACCESS = _core.ERR_UNDEFINED, _core.ERR_NOT_FOUND, _core.ERR_ACCESS
ERR_ILLEGAL, ERR_UNKNOWN_TID, ERR_OPTIONS = _core.ERR_ILLEGAL, _core.ERR_UNKNOWN_TID, _core.ERR_OPTIONS
MIN_BLKSIZE, MAX_BLKSIZE, MAX_WINDOWSIZE = _core.MIN_BLKSIZE, _core.MAX_BLKSIZE, _core.MAX_WINDOWSIZE


def core():
    """The module in use (tests pass either twin to TftpServer explicitly)."""
    return _core
