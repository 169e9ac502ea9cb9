"""What a route answers, independent of any socket: a status code, headers, and a body that is
either bytes or a byte range of an open store file (sent with sendfile by the transport).

`FileBody.on_done(sent, complete, at)` is called exactly once when the transport is finished with
the file (every byte handed to the kernel, or the connection gone), so the ledger can record the end
of a transfer whatever happened to it (`at`: when the last send began, for a whole transfer).
"""
import email.utils
import os
import time

REASONS = {200: "OK", 206: "Partial Content", 304: "Not Modified", 400: "Bad Request",
           401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
           408: "Request Timeout", 413: "Content Too Large", 416: "Range Not Satisfiable",
           431: "Request Header Fields Too Large", 500: "Internal Server Error", 503: "Service Unavailable"}


class FileBody:
    """A byte range of an open store file, sent with sendfile or from an mmap.

    `last_send_at` (from `clock`, stamped by the transport before each send) becomes the transfer's
    end in the boot record: the moment the last bytes were handed over, which no reader can precede,
    however late a loaded machine gives the server its CPU back after the send."""
    __slots__ = ("fd", "offset", "remaining", "mm", "on_done", "sent", "clock", "last_send_at")

    def __init__(self, fd, offset, length, on_done, clock=time.time):
        self.fd, self.offset, self.remaining, self.on_done = fd, offset, length, on_done
        self.mm = None
        self.sent = 0
        self.clock = clock
        self.last_send_at = None

    def close(self, complete):
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
            self.mm = None     # the mapping goes when the last memoryview does
            done, self.on_done = self.on_done, None
            if done:
                done(self.sent, complete, self.last_send_at if complete else None)


class Reply:
    """What a route answers: status, headers, and a body (bytes, or a file range)."""
    __slots__ = ("code", "headers", "body", "file", "close")

    def __init__(self, code, body=b"", headers=(), file=None, close=False):
        self.code, self.body, self.headers, self.file, self.close = code, body, list(headers), file, close

    def discard(self):
        """The reply will not be sent (HEAD, an error on the way): release its file, record nothing sent."""
        if self.file is not None:
            self.file.close(complete=False)


def text_reply(code, message, close=False, headers=()):
    return Reply(code, (message.rstrip("\n") + "\n").encode(), [("Content-Type", "text/plain; charset=utf-8"),
                                                                *headers], close=close)


def json_reply(body):
    """A JSON document (already encoded) that no cache may keep."""
    return Reply(200, body, [("Content-Type", "application/json"), ("Cache-Control", "no-store")])


def http_date(ts):
    return email.utils.formatdate(ts, usegmt=True)
