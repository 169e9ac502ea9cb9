"""The sources a node's iPXE script fetches from, prepended by the server that sends the script.

With a cache tier (docs/formats.md, "iPXE script header"), the built script refers to iPXE settings that
only the serving server can fill in: the node's three blob sources (its caches by rendezvous hashing, then
wwfast servers when fewer caches are healthy), three wwfast servers for the runtime overlay (the sending
server first), and the content addresses of its kernel, image and system overlay in the generation the
node boots. Socket-free: the server calls header() and inject() per script request.
"""
from wwfast.cluster.placement import choose, rank

SLOTS = 3
BLOB_PATH = "/blob/sha256"
STAGES = ("kernel", "image", "system")


def _fill(urls, k):
    """Exactly k entries: the distinct ones in order, then repeated from the start."""
    distinct = list(dict.fromkeys(urls))
    if not distinct:
        return []
    return [distinct[i % len(distinct)] for i in range(k)]


def blob_sources(node_id, group, caches, servers, k=SLOTS, first=None):
    """Base URLs (ending in /blob/sha256) the node tries in order: its caches, then servers. `first`: the
    name of the cache bounded-load placement gave the node (placement.bounded_first); it goes first."""
    chosen = choose(node_id, caches, group, len(caches) if first else k)
    if first and not group:
        chosen = [m for m in chosen if m.name == first] + [m for m in chosen if m.name != first]
    urls = [m.url for m in chosen[:k]]
    urls += [m.url for m in rank(node_id, servers)]
    return [u + BLOB_PATH for u in _fill(urls, k)]


def server_order(node_id, self_url, servers, k=SLOTS):
    """The wwfast servers for the node's runtime overlay: the one sending the script first."""
    urls = [self_url] + [m.url for m in rank(node_id, servers) if m.url != self_url]
    return _fill(urls, k)


def header(node, blob_urls, server_urls, generation=""):
    """The `set` lines for one node (a catalog node with .artifact(stage))."""
    lines = [f"set wwfast-blob{i} {u}" for i, u in enumerate(blob_urls, 1)]
    lines += [f"set wwfast-server{i} {u}" for i, u in enumerate(server_urls, 1)]
    # the node's own encoding when the manifest gives one (gz: its kernel predates zstd initrds)
    encoding = getattr(node, "encoding", None)
    for stage in STAGES:
        artifact = node.artifact(stage, encoding) if encoding else node.artifact(stage)
        if artifact is not None:
            lines.append(f"set wwfast-{stage} {artifact.sha256}")
    if generation:
        lines.append(f"set wwfast-generation {generation}")
    return "".join(line + "\n" for line in lines)


def inject(script, header_text):
    """The script with `header_text` after its first line (#!ipxe stays first, as iPXE requires)."""
    if isinstance(script, str):
        script = script.encode()
    first, sep, rest = script.partition(b"\n")
    return first + b"\n" + header_text.encode() + (rest if sep else b"")
