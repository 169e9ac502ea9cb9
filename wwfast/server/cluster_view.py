"""What a node's script header says in a scale-out: its sources, from the live servers and caches.

`ClusterView` turns member lists into a node script's header (wwfast.cluster.sources: the node's three
caches by bounded-load rendezvous hashing, then servers). Where the lists come from is the subclass's:
wwfast.server.scaleout.ScaleOut watches them in etcd (one per server: the single serve process, or the
supervisor of `serve --workers N`); `PushedView`, a worker's, gets them from its supervisor, so a worker
needs no etcd client at all. No sockets and no etcd here.
"""
import threading
import urllib.parse

from wwfast.cluster import sources
from wwfast.cluster.placement import Member, bounded_first
from wwfast.define.cluster_settings import server_name, server_url

SYNC_NODES = 2000       # bounded placement of this many nodes takes a few ms; more go to a thread


class ClusterView:
    def __init__(self, settings):
        self.name, self.url = server_name(settings), server_url(settings)
        self.me = Member(self.name, self.url)
        self.static_caches = [Member.from_dict(c) for c in settings.caches]
        self.group_tag = settings.cache_group_tag
        self._placement = (None, {})
        self._placing, self._placing_lock = None, threading.Lock()

    # -- the members (a subclass knows them) -------------------------------------------------------
    def live_servers(self):
        """The live servers, or None while they are not known (no etcd, or not read yet)."""
        return None

    def live_caches(self):
        """The caches announced in etcd (the static ones from the settings come on top)."""
        return []

    def members(self):
        """What a supervisor pushes to its workers (PushedView.update)."""
        live = self.live_servers()
        return {"servers": None if live is None else [m.as_dict() for m in live],
                "caches": [m.as_dict() for m in self.live_caches()]}

    # -- what a node's script says -----------------------------------------------------------------
    def caches(self):
        live = list(self.static_caches)
        names = {m.name for m in live}
        return live + [m for m in self.live_caches() if m.name not in names]

    def servers(self):
        live = self.live_servers() or []
        return live if any(m.url == self.url for m in live) else live + [self.me]

    def is_server(self, address):
        """True when `address` is a live server's (it may pull every file of a generation)."""
        return any(urllib.parse.urlsplit(m.url).hostname == address for m in self.live_servers() or [])

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

    # -- boot records and status: the process that keeps the ledger does these ------------------------
    def record(self, node_id, summary):
        pass

    def merge_status(self, doc):
        return doc


class PushedView(ClusterView):
    """A worker's view: the members its supervisor pushed (the supervisor also merges /status)."""

    def __init__(self, settings):
        super().__init__(settings)
        self._servers, self._caches = None, []

    def update(self, members):
        servers = members.get("servers")
        self._servers = None if servers is None else [Member.from_dict(m) for m in servers]
        self._caches = [Member.from_dict(m) for m in members.get("caches") or []]

    def live_servers(self):
        return self._servers

    def live_caches(self):
        return self._caches
