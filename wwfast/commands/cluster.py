"""`wwfast cluster`: the shared state of several wwfast servers and their caches (settings `cluster:`).

    wwfast cluster announce-cache --url http://ADDR:PORT [--group G] [--weight W] [--name N]
        run on a cache host: keeps the cache in etcd's membership while its nginx answers
    wwfast cluster show [--json]
        the published generation, the live servers and caches, and how many nodes have boot records
"""
import json
import logging
import signal
import sys
import threading
import urllib.request

from wwfast.cluster import boot_mirror, pointer
from wwfast.cluster.etcd import Etcd, EtcdUnavailable
from wwfast.cluster.membership import KINDS, Announcer, member_key
from wwfast.cluster.placement import Member
from wwfast.define import settings
from wwfast.define.cluster_settings import http_url
from wwfast.errors import UsageError


def register(subparsers):
    p = subparsers.add_parser("cluster", help="shared state of several servers and their caches (etcd)",
                              description=__doc__.splitlines()[0])
    p.set_defaults(func=lambda args: (_ for _ in ()).throw(UsageError("wwfast cluster announce-cache|show")))
    sub = p.add_subparsers(dest="what", metavar="ACTION")
    a = sub.add_parser("announce-cache", help="keep this cache host in the membership while its nginx is healthy")
    a.add_argument("--url", required=True, metavar="URL", help="how nodes reach this cache, http://ADDR:PORT")
    a.add_argument("--name", help="member name (default: ADDR:PORT of --url)")
    a.add_argument("--group", default="", help="cache group (nodes whose cache group tag names it come here first)")
    a.add_argument("--weight", type=float, default=1.0, help="share of the nodes relative to other caches")
    a.add_argument("--health", metavar="URL", help="what must answer 200 (default URL/wwfast-cache/health)")
    a.add_argument("--etcd", action="append", metavar="URL", help="etcd endpoint (default: the settings)")
    a.set_defaults(func=cmd_announce_cache)
    s = sub.add_parser("show", help="published generation, live servers and caches, boot records")
    s.add_argument("--json", action="store_true")
    s.add_argument("--etcd", action="append", metavar="URL", help="etcd endpoint (default: the settings)")
    s.set_defaults(func=cmd_show)


def _etcd(args):
    conf = settings.load(args.conf)
    endpoints = args.etcd or conf.etcd_endpoints
    if not endpoints:
        raise UsageError("no etcd: give --etcd URL or set cluster: etcd: in the settings")
    try:
        endpoints = [http_url(e) for e in endpoints]
    except ValueError as e:
        raise UsageError(f"--etcd: {e}") from None
    return Etcd(endpoints), conf


def _healthy(url):
    def check():
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                return r.status == 200
        except OSError:
            return False
    return check


def cmd_announce_cache(args):
    etcd, conf = _etcd(args)
    try:
        url = http_url(args.url)
    except ValueError as e:
        raise UsageError(f"--url: {e}") from None
    if not 0 < args.weight <= 1000:
        raise UsageError("--weight: a number in (0, 1000]")
    member = Member(args.name or url.split("://", 1)[1], url, args.group, args.weight)
    announcer = Announcer(etcd, conf.etcd_prefix, "caches", member, conf.lease_ttl,
                          healthy=_healthy(args.health or url + "/wwfast-cache/health"))
    logging.basicConfig(level=logging.INFO, format="cluster: %(message)s", stream=sys.stdout)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    print(f"cluster: announcing cache {member.name} ({url}) with a {conf.lease_ttl} s lease", flush=True)
    announcer.start()
    done.wait()
    announcer.stop(leave=True)
    print(f"cluster: cache {member.name} left", flush=True)
    return 0


def cmd_show(args):
    etcd, conf = _etcd(args)
    prefix = conf.etcd_prefix
    try:
        current, _ = pointer.read_pointer(etcd, prefix)
        members = {}
        for kind in KINDS:
            values, _ = etcd.get_prefix(member_key(prefix, kind))
            members[kind] = sorted((json.loads(v) for v in values.values()), key=lambda m: m.get("name", ""))
        records = boot_mirror.read_all(etcd, prefix)
    except EtcdUnavailable as e:
        print(f"wwfast: {e}", file=sys.stderr)
        return 1
    doc = {"manifest": current, "members": members, "boot_records": len(records)}
    if args.json:
        print(json.dumps(doc, indent=1, sort_keys=True))
        return 0
    print(f"generation: {(current or {}).get('generation', '(none published)')}")
    for kind in KINDS:
        print(f"{kind}: " + (", ".join(f"{m['name']} {m['url']}" + (f" [{m['group']}]" if m.get('group') else "")
                                       for m in members[kind]) or "(none)"))
    print(f"nodes with boot records: {len(records)}")
    return 0
