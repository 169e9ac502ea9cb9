"""The content-addressed route of the cache tier, registered on the Provisioner (docs/formats.md, "Blobs").

    /blob/sha256/<digest>     the kernel, image or system overlay whose bytes hash to <digest>
                              (Cache-Control immutable, strong ETag, Range), or the current manifest

Only the large public files of a boot pass here, so a cache (stock nginx) may keep them for ever: never
the per-node iPXE script nor the runtime overlay (it carries secrets; those stay on the node routes with
their asset key, secure mode and TLS checks). A digest is looked up in the current generation and in
the last few this server served, because a node booting the previous generation asks its cache for the
old files, and the cache may ask any server.
Servers following a publish (etcd) pull every file of the manifest, the manifest itself included: those
other files are answered only to a live server's address (etcd membership), with `no-store` so no cache
keeps them, and never in single-server mode.
"""
import logging
import os
import re
import weakref

from wwfast import fsutil
from wwfast.server.catalog import manifest_path
from wwfast.server.routing import route
from wwfast.server.replies import text_reply

log = logging.getLogger("wwfast.serve")

BLOB_STAGES = ("kernel", "image", "system")
IMMUTABLE = "public, max-age=31536000, immutable"
DIGEST = re.compile(r"^[0-9a-f]{64}$")
_indexes = weakref.WeakKeyDictionary()      # catalog -> ({digest: (stage, Artifact)} public, the same private)
_manifest = {}                              # file identity -> sha256 of the current manifest file


class _ManifestFile:
    """The manifest as a store-like artifact for file_reply."""
    __slots__ = ("path", "name", "size", "sha256")

    def __init__(self, path, digest):
        self.path, self.name, self.sha256 = path, "manifest.json", digest
        self.size = None


def index(catalog):
    """({digest: (stage, artifact)} of every blob a node of `catalog` may fetch through a cache, the same of
    every other file of the generation (for servers only))."""
    found = _indexes.get(catalog)
    if found is None:
        public, private = {}, {}
        for node in catalog.nodes.values():
            for stage, encodings in node.artifacts.items():
                for artifact in encodings.values():
                    (public if stage in BLOB_STAGES else private).setdefault(artifact.sha256, (stage, artifact))
        if catalog.unknown_ipxe is not None:
            private.setdefault(catalog.unknown_ipxe.sha256, ("ipxe", catalog.unknown_ipxe))
        found = _indexes[catalog] = (public, {d: v for d, v in private.items() if d not in public})
    return found


def manifest_digest(state_dir):
    """(path, sha256) of STATE/publish/manifest.json, hashed once per version of the file."""
    path = manifest_path(state_dir)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return path, None
    ident = (st.st_ino, st.st_mtime_ns, st.st_size)
    if ident not in _manifest:
        _manifest.clear()
        _manifest[ident] = fsutil.sha256_file(path)
    return path, _manifest[ident]


@route("blob")
def blob_route(provisioner, req):
    req.label = "blob"
    if len(req.args) != 2 or req.args[0] != "sha256" or not DIGEST.match(req.args[1]):
        return text_reply(404, "blobs are /blob/sha256/<64 lowercase hex digits>")
    digest = req.args[1]
    for catalog in provisioner.recent_catalogs():
        hit = index(catalog)[0].get(digest)
        if hit is not None:
            stage, artifact = hit
            reply = provisioner.file_reply(artifact, req, stage, None)
            if reply.code in (200, 206, 304):
                reply.headers.append(("Cache-Control", IMMUTABLE))
            return reply
    scaleout = provisioner.scaleout
    if scaleout is None or not scaleout.is_server(req.peer[0]):
        return text_reply(404, f"no blob {digest} in the generations this server holds")
    for catalog in provisioner.recent_catalogs():
        hit = index(catalog)[1].get(digest)
        if hit is not None:
            reply = provisioner.file_reply(hit[1], req, hit[0], None)
            reply.headers.append(("Cache-Control", "no-store"))
            return reply
    state_dir = getattr(provisioner.watcher, "state_dir", None)
    if state_dir:
        path, sha = manifest_digest(state_dir)
        if sha == digest:
            reply = provisioner.file_reply(_ManifestFile(path, sha), req, "manifest", None)
            reply.headers.append(("Cache-Control", "no-store"))
            return reply
    return text_reply(404, f"no blob {digest} in the generations this server holds")
