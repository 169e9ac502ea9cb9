"""A node's boot record as text: one line per request of its current (and last) boot.

Used by `wwfast status NODE` and by the demo; reads the document /status?node=ID answers (the same
entry STATE/serve/status.json keeps), see wwfast.server.bootrecord for its fields.
"""
import time

from wwfast.commands.listing import print_table

HEADERS = ("#", "STAGE", "PROTO", "FILE", "ENC", "CODE", "BYTES", "AT (s)", "TOOK (s)", "RESULT", "CLIENT")


def short_file(name):
    """A store file name (64 hex digits + suffix) shortened for a table: its first 12 digits + suffix."""
    head, dot, suffix = name.partition(".")
    return f"{head[:12]}..{dot}{suffix}" if len(head) == 64 else name


def request_row(i, request, boot_start):
    start, end = request.get("start") or 0, request.get("end")
    result = request.get("result") or "in flight"
    if request.get("reason"):
        result += f" ({request['reason']})"
    length, sent = request.get("length") or 0, request.get("bytes") or 0
    size = f"{sent:,}" if result.startswith("ok") and sent == length else f"{sent:,}/{length:,}"
    return (i, request.get("stage", ""), request.get("protocol", ""), short_file(request.get("file", "")),
            request.get("encoding", ""), request.get("code") or "", size,
            f"+{start - boot_start:.3f}" if boot_start and start else "", f"{end - start:.3f}" if end else "",
            result, request.get("client", ""))


def boot_lines(title, boot):
    """The lines showing one boot (a dict of wwfast.server.bootrecord), or a line saying there is none."""
    if not boot:
        return [f"{title}: none recorded"]
    start, end, requests = boot.get("start") or 0, boot.get("end") or 0, boot.get("requests") or []
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(start)) if start else "before the records began"
    took = f"booted in {end - start:.1f} s" if start and end else "not finished (no whole runtime overlay yet)"
    total = sum(r.get("bytes") or 0 for r in requests)
    dropped = f", {boot['dropped']} more replaced by the latest (cap)" if boot.get("dropped") else ""
    lines = [f"{title}: started {when}, {took}, generation {boot.get('generation') or '?'}; "
             f"{len(requests)} requests{dropped}, {total:,} bytes sent"]
    print_table(HEADERS, [request_row(i, r, start) for i, r in enumerate(requests, 1)],
                out=lambda line: lines.append("  " + line))
    return lines


def record_lines(doc):
    """`wwfast status NODE`'s view of one node: its current boot, then the one before."""
    node_id = doc.get("node") or doc.get("node name", "?")
    lines = [f"{node_id}: last {doc.get('stage') or '--'} {doc.get('sent') or ''} from {doc.get('ipaddr') or '--'}"]
    if doc.get("unserved"):
        lines.append(f"  not served: {doc['unserved']}")
    lines += boot_lines("  boot", doc.get("boot"))
    lines += boot_lines("  last boot", doc.get("last boot"))
    return lines


def summary(boot):
    """One line for a boot: `ipxe 0.01 s 1,024 B > kernel ...` (the demo's per-node line)."""
    parts = []
    for r in (boot or {}).get("requests") or []:
        took = f"{r['end'] - r['start']:.2f} s" if r.get("end") else "in flight"
        mark = "" if r.get("result") == "ok" else f" [{r.get('result') or 'in flight'}]"
        parts.append(f"{r.get('stage')}/{r.get('protocol')} {took} {r.get('bytes') or 0:,} B{mark}")
    return " > ".join(parts) or "no requests recorded"
