"""serve's part in a scale-out (settings `cluster:`, docs/deployment.md): a cache tier, shared state in etcd.

With caches (static in the settings, or announced in etcd) every node script this server sends gets the
header of wwfast.cluster.sources (wwfast.server.cluster_view). With etcd this server also
- follows the published-generation pointer (the manifest from etcd, store files it lacks pulled, the
  manifest installed and the catalog reloaded at once, so a publish reaches it within the 2 s the issue asks),
- announces itself under a lease while it has a generation to serve, and watches the servers and caches,
- mirrors its nodes' boot records (batched transactions) and watches everyone's, so /status (and so
  `wwfast status`) on any server shows the whole cluster.
etcd calls run in threads, never in the event loop; while etcd is unreachable the last known members
stay in use and the parts that could not start are retried every second. All of this runs once per server:
in the serve process, or with `serve --workers N` in the supervisor, which pushes the members to its
workers (wwfast.server.cluster_view.PushedView) and merges /status for them.
"""
import json
import logging
import threading

from wwfast.cluster import boot_mirror
from wwfast.cluster.etcd import Etcd, EtcdUnavailable, local_first
from wwfast.cluster.membership import Announcer, MemberView
from wwfast.cluster.pointer import PointerFollower, read_pointer
from wwfast.define import cluster_settings
from wwfast.server.cluster_view import ClusterView

log = logging.getLogger("wwfast.serve")
RETRY_SECONDS = 1.0


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


class ScaleOut(ClusterView):
    """The scale-out part of one server: etcd followed and written once, whatever the worker count."""

    def __init__(self, settings, state_dir, healthy=None, on_switch=None, on_members=None):
        super().__init__(settings)
        self.settings, self.state_dir = settings, state_dir
        self.healthy = healthy or (lambda: True)
        self.on_switch = on_switch
        self.on_members = on_members        # called (from a watch thread) when the live servers or caches change
        # its own host's etcd member first: what it watches then does not cross its own (busy) link again
        self.etcd = Etcd(local_first(settings.etcd_endpoints)) if settings.etcd_endpoints else None
        self.prefix = settings.etcd_prefix
        self.follower = self.caches_view = self.servers_view = self.announcer = self.mirror = self.boots = None
        self._stop = threading.Event()
        self._starter = None

    def attach(self, loop, ledger, watcher, on_members=None):
        """Serve's glue, in the process that keeps the ledger and watches manifest.json (the only one, or
        the supervisor of serve --workers N): a pointer switch (a thread) has the catalog reloaded at once
        rather than at the next poll, and every event the ledger applies is mirrored to etcd."""
        self.on_switch = lambda _pointer: loop.call_soon_threadsafe(watcher.check)
        if on_members is not None:
            self.on_members = lambda: loop.call_soon_threadsafe(on_members)
        mirror_boot_records(ledger, self)
        return self

    def live_servers(self):
        return self.servers_view.current() if self.servers_view is not None else None

    def live_caches(self):
        return self.caches_view.current() if self.caches_view is not None else []

    def _members_changed(self, _members=None):
        if self.on_members is not None:
            self.on_members()

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
        parts = [("servers_view", lambda: MemberView(self.etcd, self.prefix, "servers",
                                                     on_change=self._members_changed).start()),
                 ("caches_view", lambda: MemberView(self.etcd, self.prefix, "caches",
                                                    on_change=self._members_changed).start()),
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
                if name.endswith("_view"):
                    self._members_changed()
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


def mirror_boot_records(ledger, scaleout):
    """Every event the ledger applies (this process's, or forwarded by a worker) also goes to etcd: the
    node's status summary, batched by the mirror (latest per node)."""
    from wwfast.server.status import summary
    apply = ledger.apply

    def apply_and_mirror(event):
        apply(event)
        rec = ledger.status.nodes.get(event[1]) if event[1] else None
        if rec is not None:
            scaleout.record(event[1], summary(rec))
    ledger.apply = apply_and_mirror
