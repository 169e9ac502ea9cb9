"""HTTP validators and byte ranges (RFC 9110 sections 13 and 14) for store files.

The ETag of a store file is its sha256 (content addressed, so a strong validator).
"""
import email.utils


def not_modified(headers, etag, mtime):
    inm = headers.get("if-none-match")
    if inm is not None:
        tags = [t.strip() for t in inm.split(",")]
        return "*" in tags or etag in tags or ("W/" + etag) in tags
    ims = headers.get("if-modified-since")
    if ims:
        try:
            return int(mtime) <= email.utils.parsedate_to_datetime(ims).timestamp()
        except (TypeError, ValueError):
            return False
    return False


def if_range_ok(value, etag, mtime):
    if value is None:
        return True
    value = value.strip()
    if value.startswith('"'):
        return value == etag
    try:
        return int(mtime) <= email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return False


def parse_range(value, size):
    """(start, end) for one 'bytes=' range, 'unsatisfiable', or None to ignore it (RFC 9110 14.2)."""
    unit, _, spec = value.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None                     # other units and multiple ranges: send the whole file
    first, dash, last = spec.strip().partition("-")
    if not dash:
        return None
    first, last = first.strip(), last.strip()
    if not (first.isdigit() or first == "") or not (last.isdigit() or last == "") or first == last == "":
        return None
    if first == "":                     # suffix: the last N bytes
        n = int(last)
        if n == 0 or size == 0:
            return "unsatisfiable"
        return max(0, size - n), size
    start = int(first)
    end = size if last == "" else min(int(last) + 1, size)
    if last and int(last) < start:
        return None
    if start >= size:
        return "unsatisfiable"
    return start, end
