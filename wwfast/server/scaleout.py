"""serve's part in a scale-out (settings `cluster:`, docs/deployment.md): a cache tier, shared state in etcd.

With caches (static in the settings, or announced in etcd) every node script this server sends gets the
header of wwfast.cluster.sources: the node's three caches by rendezvous hashing, then servers. With etcd
this server also
- follows the published-generation pointer (pulls what it lacks, installs the manifest, and has the
  catalog reloaded at once, so a publish reaches it within the 2 s the issue asks),
- announces itself under a lease while it has a generation to serve, and watches the servers and caches,
- mirrors its nodes' boot records (batched transactions) and watches everyone's, so /status (and so
  `wwfast status`) on any server shows the whole cluster.
etcd calls run in threads, never in the event loop; while etcd is unreachable the last known members
stay in use and the parts that could not start are retried every second.
"""
import json
import logging
import threading
import urllib.parse

from wwfast.cluster import boot_mirror, sources
from wwfast.cluster.etcd import Etcd, EtcdUnavailable
from wwfast.cluster.membership import Announcer, MemberView
from wwfast.cluster.placement import Member, bounded_first
from wwfast.cluster.pointer import PointerFollower, read_pointer
from wwfast.define import cluster_settings
from wwfast.define.cluster_settings import server_name, server_url

log = logging.getLogger("wwfast.serve")
RETRY_SECONDS = 1.0
SYNC_NODES = 2000       # bounded placement of this many nodes takes a few ms; more go to a thread


def wanted(settings):
    """True when serve runs a scale-out part: caches listed, or etcd."""
    return cluster_settings.scaleout_wanted(settings)


class BootView:
    """Every server's boot records (etcd `boot/`), kept current by a watch."""

    def __init__(self, etcd, prefix):
        self.etcd, self.key = etcd, boot_mirror.boot_key(prefix)
        self.records = {}
        self.watch = None

    def start(self):
        values, revision = self.etcd.get_prefix(self.key)
        self._events([("PUT", key, value, 0) for key, value in values.items()])
        self.watch = self.etcd.watch(self.key, self._events, prefix=True, start_revision=revision + 1)
        return self

    def _events(self, events):
        for kind, key, value, _ in events:
            node = key[len(self.key):]
            if kind == "DELETE":
                self.records.pop(node, None)
                continue
            try:
                self.records[node] = json.loads(value)
            except ValueError:
                log.warning("etcd %s is not JSON; skipped", key)

    def stop(self):
        if self.watch is not None:
            self.watch.stop()


class ScaleOut:
    def __init__(self, settings, state_dir, healthy=None, on_switch=None):
        self.settings, self.state_dir = settings, state_dir
        self.name, self.url = server_name(settings), server_url(settings)
        self.me = Member(self.name, self.url)
        self.static_caches = [Member.from_dict(c) for c in settings.caches]
        self.group_tag = settings.cache_group_tag
        self.healthy = healthy or (lambda: True)
        self.on_switch = on_switch
        self.etcd = Etcd(settings.etcd_endpoints) if settings.etcd_endpoints else None
        self.prefix = settings.etcd_prefix
        self.follower = self.caches_view = self.servers_view = self.announcer = self.mirror = self.boots = None
        self._stop = threading.Event()
        self._starter = None
        self._placement = (None, {})
        self._placing, self._placing_lock = None, threading.Lock()

    # -- what a node's script says ----------------------------------------------------------------
    def caches(self):
        live = list(self.static_caches)
        if self.caches_view is not None:
            names = {m.name for m in live}
            live += [m for m in self.caches_view.current() if m.name not in names]
        return live

    def servers(self):
        live = self.servers_view.current() if self.servers_view is not None else []
        return live if any(m.url == self.url for m in live) else live + [self.me]

    def is_server(self, address):
        """True when `address` is a live server's (it may pull every file of a generation)."""
        if self.servers_view is None:
            return False
        return any(urllib.parse.urlsplit(m.url).hostname == address for m in self.servers_view.current())

    def script(self, script, node, catalog):
        """The node's script (from `catalog`) with the header naming its sources now."""
        servers, caches = self.servers(), self.caches()
        group = getattr(node, "cache_group", "") or ""
        first = None if group else self.placement(catalog, caches).get(node.id)
        blob_urls = sources.blob_sources(node.id, group, caches, servers, first=first)
        header = sources.header(node, blob_urls, sources.server_order(node.id, self.url, servers), catalog.generation)
        return sources.inject(script, header)

    def placement(self, catalog, caches):
        """{node: first cache} by bounded-load rendezvous over the generation's nodes (those not pinned to a
        group) and the live caches; recomputed when either changes. Past SYNC_NODES nodes it is computed in
        a thread, plain rendezvous answering meanwhile."""
        key = (catalog.generation, len(catalog.nodes), tuple((m.name, m.weight) for m in caches))
        current = self._placement
        if current[0] == key:
            return current[1]
        ids = [n.id for n in catalog.nodes.values() if not getattr(n, "cache_group", "")]
        if len(ids) <= SYNC_NODES:
            self._placement = (key, bounded_first(ids, caches))
            return self._placement[1]
        with self._placing_lock:
            if self._placing != key:
                self._placing = key

                def compute():
                    self._placement = (key, bounded_first(ids, caches))
                threading.Thread(target=compute, name="placement", daemon=True).start()
        return {}

    # -- boot records ---------------------------------------------------------------------------------
    def record(self, node_id, summary):
        if self.mirror is not None:
            self.mirror.record(node_id, summary)

    def merge_status(self, doc):
        """The status document with every other server's newer records (each row names its server)."""
        if self.boots is None:
            return doc
        nodes = doc.setdefault("nodes", {})
        for node_id, rec in list(self.boots.records.items()):
            mine = nodes.get(node_id)
            if rec.get("server") == self.name and mine is not None:
                continue
            if mine is None or (rec.get("last seen") or 0) > (mine.get("last seen") or 0):
                nodes[node_id] = dict(rec)
        doc["servers"] = sorted(m.name for m in self.servers())
        return doc

    # -- lifecycle --------------------------------------------------------------------------------------
    def start(self):
        if self.etcd is None:
            return self
        self._starter = threading.Thread(target=self._start_parts, name="scale-out start", daemon=True)
        self._starter.start()
        return self

    def _start_parts(self):
        s = self.settings
        # announce first: the server we pull a new generation from answers live servers only
        parts = [("servers_view", lambda: MemberView(self.etcd, self.prefix, "servers").start()),
                 ("caches_view", lambda: MemberView(self.etcd, self.prefix, "caches").start()),
                 ("announcer", lambda: Announcer(self.etcd, self.prefix, "servers", self.me, s.lease_ttl,
                                                 healthy=self.healthy).start()),
                 ("follower", lambda: PointerFollower(self.etcd, self.prefix, self.state_dir,
                                                      on_switch=self.on_switch, name=self.name).start())]
        if s.boot_records:
            parts += [("mirror", lambda: boot_mirror.BootMirror(self.etcd, self.prefix, self.name).start()),
                      ("boots", lambda: BootView(self.etcd, self.prefix).start())]
        while parts and not self._stop.is_set():
            name, make = parts[0]
            try:
                setattr(self, name, make())
                parts.pop(0)
            except EtcdUnavailable as e:
                log.warning("scale-out: %s not started yet: %s", name, e)
                self._stop.wait(1.0)
        if not parts:
            log.info("scale-out: %s (%s) follows etcd %s", self.name, self.url, ", ".join(self.etcd.endpoints))
        while not self._stop.wait(RETRY_SECONDS):
            self._retry_switch()

    def _retry_switch(self):
        """A switch that failed (an origin down, a file not there yet) is tried again until it lands."""
        follower = self.follower
        if follower is None or not follower.errors:
            return
        if follower.switches and follower.switches[-1][0] > follower.errors[-1][0]:
            return
        try:
            current, _ = read_pointer(self.etcd, self.prefix)
        except EtcdUnavailable:
            return
        if current is not None:
            follower.follow(current)

    def stop(self):
        self._stop.set()
        if self._starter is not None:
            self._starter.join(10)
        for part in (self.announcer, self.follower, self.caches_view, self.servers_view, self.boots):
            if part is not None:
                part.stop()
        if self.mirror is not None:
            self.mirror.stop()
