"""`wwfast status`: what each node last fetched, like `wwctl node status`.

Asks the running server's /status; when none answers, reads the copy it saves in
STATE/serve/status.json. A row is marked stale when the node has not been seen
for the node agent's update interval + 5 s, and STALE after twice the interval.
`wwfast status NODE...` also prints each named node's boot records (/status?node=ID,
or the saved copy): every request of its current and last boot.
"""
import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

from wwfast import layout
from wwfast.define import settings
from wwfast.server.catalog import Catalog, ManifestError
from wwfast.server.status import blank, read_status
from wwfast.commands.bootview import record_lines
from wwfast.commands.listing import print_table

DISPLAY = {"ipxe": "IPXE", "kernel": "KERNEL", "image": "IMAGE", "system": "SYSTEM OVERLAY",
           "runtime": "RUNTIME OVERLAY", "": "--"}
YELLOW, RED, RESET = "\033[33m", "\033[31m", "\033[0m"


def register(subparsers):
    p = subparsers.add_parser("status", help="provisioning status of the nodes (last stage, file, last seen)")
    p.add_argument("nodes", nargs="*", metavar="NODE", help="only these nodes")
    p.add_argument("--server", metavar="URL", help="server to ask (default: from the settings, e.g. "
                                                     "http://127.0.0.1:9873)")
    p.add_argument("-w", "--watch", action="store_true", help="refresh until interrupted")
    p.add_argument("-U", "--update", type=int, default=1000, metavar="MS", help="refresh period with --watch")
    p.add_argument("-l", "--last", action="store_true", help="sort by last seen")
    p.add_argument("-r", "--reverse", action="store_true", help="reverse the order")
    p.add_argument("-u", "--unknown", action="store_true", help="only nodes never seen")
    p.add_argument("--json", action="store_true", help="print the status document as JSON (with NODE: each "
                                                        "node's boot records)")
    p.set_defaults(func=cmd_status)


def server_url(args):
    if args.server:
        return args.server.rstrip("/")
    conf = settings.load(args.conf)
    host = conf.http_bind if conf.http_bind not in ("0.0.0.0", "::", "") else "127.0.0.1"
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{conf.http_port}"


def fetch(args):
    """(status document, where it came from)."""
    url = server_url(args) + "/status"
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return json.load(r), url
    except (OSError, ValueError):
        doc = read_status(args.state)
        try:                      # nodes never seen are listed too, as the server does
            catalog = Catalog.load(args.state)
        except ManifestError:
            catalog = None
        if catalog is not None:
            for node_id in catalog.nodes:
                doc["nodes"].setdefault(node_id, blank(node_id))
            doc["generation"], doc["update interval"] = catalog.generation, catalog.update_interval
            doc["unserved"] = dict(catalog.unserved)
        return doc, layout.status_json(args.state) + " (no server answered at " + url + ")"


def fetch_records(args, node_ids, doc, source):
    """{node id: its /status?node=ID document, or None when no such node}, from where `doc` came."""
    out = {}
    for node_id in node_ids:
        if source.startswith("http"):
            url = server_url(args) + "/status?node=" + urllib.parse.quote(node_id)
            try:
                with urllib.request.urlopen(url, timeout=5) as r:
                    out[node_id] = json.load(r)
            except urllib.error.HTTPError as e:
                if e.code != 404:
                    raise
                out[node_id] = None
            continue
        rec = doc["nodes"].get(node_id)        # the saved copy keeps the boot records beside the summary
        out[node_id] = dict(rec, node=node_id) if rec is not None else None
    return out


def rows(doc, args, now):
    interval = doc.get("update interval") or 60
    out = []
    for node_id, rec in doc["nodes"].items():
        if args.nodes and node_id not in args.nodes:
            continue
        seen = rec.get("last seen") or 0
        if args.unknown and seen:
            continue
        age = now - seen if seen else None
        mark = ""
        if age is None:
            mark = "never"
        elif age >= 2 * interval:
            mark = "STALE"
        elif age >= interval + 5:
            mark = "stale"
        boot = ""
        if rec.get("boot end") and rec.get("boot start"):
            boot = f"{rec['boot end'] - rec['boot start']:.1f}"
        out.append((node_id, DISPLAY.get(rec.get("stage", ""), rec.get("stage", "").upper()), rec.get("sent", ""),
                    rec.get("ipaddr", ""), "" if age is None else f"{age:.0f}", boot, mark, seen))
    out.sort(key=(lambda r: r[7]) if args.last else (lambda r: r[0]), reverse=args.reverse)
    return out


def show(args, out=print):
    """Print the table (and with NODE names their boot records); False when a named node is unknown."""
    doc, source = fetch(args)
    records = fetch_records(args, args.nodes, doc, source) if args.nodes else {}
    for rec in doc["nodes"].values():      # the table never shows records (the saved copy has them)
        rec.pop("boot", None)
        rec.pop("last boot", None)
    if args.json:
        out(json.dumps({**doc, "records": records} if records else doc, sort_keys=True, indent=1))
        return all(records.values())
    now = doc.get("now") or time.time()
    table = rows(doc, args, now)
    lines = []
    print_table(("NODENAME", "STAGE", "SENT", "IPADDR", "LASTSEEN (s)", "BOOT (s)", "STALE"),
                [r[:7] for r in table], out=lines.append)
    colour = sys.stdout.isatty()
    out(lines[0])
    for line, r in zip(lines[1:], table):
        tint = {"stale": YELLOW, "STALE": RED}.get(r[6], "") if colour else ""
        out(f"{tint}{line}{RESET if tint else ''}")
    for node_id, reason in sorted((doc.get("unserved") or {}).items()):
        if not args.nodes or node_id in args.nodes:
            out(f"# {node_id} is not served: {reason}")
    out(f"# {len(table)} nodes, generation {doc.get('generation', '?')}, from {source}")
    for node_id, record in records.items():
        out("")
        if record is None:
            out(f"{node_id}: no such node (not in the published manifest, never seen)")
        else:
            for line in record_lines(record):
                out(line)
    return all(records.values())


def cmd_status(args):
    if not args.watch:
        return 0 if show(args) else 1
    try:
        while True:
            sys.stdout.write("\033[H\033[2J")
            show(args)
            sys.stdout.flush()
            time.sleep(args.update / 1000)
    except KeyboardInterrupt:
        return 0
