"""Provisioning: request in, reply out. Warewulf's rules over the published manifest, no sockets.

The transport (wwfast.server.http) hands `Provisioner.answer` a parsed request and sends the Reply
it gets back; the TFTP server takes the hooks of wwfast.server.tftp_scripts (mixed in here).
Everything a node does is recorded in the boot ledger. This module holds the node routes (Warewulf's
/ipxe, /kernel, /image, ... and /provision) and the reply sending a store file (validators, ranges),
which the other route modules (blobs, efiboot) use too; the route table and request parsing are
wwfast.server.routing, which also says how to add a route.
"""
import errno
import hmac
import logging
import os
import stat

from wwfast.server.arp import arp_lookup
from wwfast.server.catalog import STAGES, normalise_mac
from wwfast.server.conditional import if_range_ok, not_modified, parse_range
from wwfast.server.replies import FileBody, Reply, http_date, text_reply
from wwfast.server.routing import ROUTES, Refusal, parse_request, recorded, route
from wwfast.server.tftp_scripts import TftpScripts
from wwfast.server.uncompressed import RawUnavailable, raw_artifact
# The other route modules register on import: /blob; /grub, /efiboot; /status, /metrics, /healthz.
from wwfast.server import blobs, efiboot, service_routes  # noqa: F401

log = logging.getLogger("wwfast.serve")

STAGE_ALIASES = {"container": "image", "overlay-system": "system", "overlay-runtime": "runtime"}
ENCODING_NAMES = {"zst": "zst", "zstd": "zst", "gz": "gz", "gzip": "gz", "none": "none"}
CONTENT_TYPES = {"ipxe": "text/plain; charset=utf-8", "grub": "text/plain; charset=utf-8"}
KEEP_GENERATIONS = 3  # previous generations whose blobs stay reachable (store files outlive them by publish's grace)


class Provisioner(TftpScripts):
    def __init__(self, watcher, ledger, secure=False, follow_manifest_secure=True, arp=arp_lookup, tls_port=None,
                 scaleout=None):
        self.watcher = watcher        # wwfast.server.catalog.CatalogWatcher: the current manifest
        # wwfast.server.scaleout.ScaleOut with a cache tier: what a node's script header says (None: one server)
        self.scaleout = scaleout
        self.previous = []            # the generations served before this one, newest first (for /blob)
        self.ledger = ledger          # wwfast.server.ledger.BootLedger
        # Secure mode: ours, or the manifest's copy of the settings unless a flag decided explicitly.
        self.secure = secure
        self.follow_manifest_secure = follow_manifest_secure
        self.arp = arp
        # TLS on (its port): the runtime overlay carries secrets, so it goes out over HTTPS only
        self.tls_port = tls_port
        self.worker = None            # serve --workers N: this process's slot, named by /healthz

    @property
    def catalog(self):
        return self.watcher.current

    def catalog_swapped(self, old):
        """A new generation is current: keep the last few for blobs that booting nodes still ask for."""
        if old is not None and old.nodes:
            self.previous = [old] + [c for c in self.previous if c is not old][:KEEP_GENERATIONS - 1]

    def recent_catalogs(self):
        return [self.catalog] + self.previous

    # -- dispatch ------------------------------------------------------------------------------
    def answer(self, method, url, headers, peer, tls=False):
        """(Reply, metrics label) for one request: `url` the raw request target (bytes), `peer` (host, port),
        `tls` whether it came over HTTPS."""
        if method not in ("GET", "HEAD"):
            return text_reply(405, f"method {method} not allowed", headers=[("Allow", "GET, HEAD")]), "other"
        req = parse_request(method, url, headers, peer)
        if isinstance(req, Reply):
            return req, "bad"
        req.tls = tls
        handler = ROUTES.get(req.name)
        if handler is None:
            if not req.name:
                return text_reply(404, "no such route; try /ipxe/<mac>, /status, /metrics, /healthz"), "other"
            return text_reply(404, f"no such route /{req.name}"), "other"
        try:
            reply = handler(self, req)
        except Refusal as e:
            reply = e.reply
        return reply, req.label

    # -- node stages (Warewulf's routes) --------------------------------------------------------
    @route("ipxe", "kernel", "image", "system", "runtime", *STAGE_ALIASES)
    def stage_route(self, req):
        """/<stage>/<mac> or /<stage>?wwid=<mac> (Warewulf's aliases: container, overlay-system, ...)."""
        stage = STAGE_ALIASES.get(req.name, req.name)
        req.label = stage
        return self.provision(req, stage)

    @route("provision")
    def provision_route(self, req):
        """/provision/<mac>?stage=<stage> (default ipxe)."""
        stage = req.query.get("stage", "ipxe") or "ipxe"
        stage = STAGE_ALIASES.get(stage, stage)
        if stage not in STAGES:
            req.label = "bad"
            return text_reply(400, f"unknown stage {stage!r}")
        req.label = stage
        return self.provision(req, stage)

    def provision(self, req, stage):
        if len(req.args) > 1:
            return text_reply(404, f"no such route {req.path}")   # labelled with the stage, as before
        if not self.watcher.loaded:
            return text_reply(503, "nothing published yet (no STATE/publish/manifest.json)")
        mac = self.requested_mac(req)
        encoding = self.requested_encoding(req)
        catalog = self.ledger.catalog_for(mac, stage, self.catalog)
        node = catalog.by_mac.get(mac)
        host = req.peer[0]
        if node is None:
            if stage == "ipxe" and catalog.unknown_ipxe is not None:
                log.info("%s: unknown MAC %s asked for iPXE; sent the unknown-node script", host, mac)
                return self.file_reply(catalog.unknown_ipxe, req, "ipxe", None)
            log.info("%s: %s for unknown MAC %s", host, stage, mac)
            return text_reply(404, f"no node has MAC {mac}")
        if node.asset_key and not hmac.compare_digest(req.query.get("assetkey", "").encode(),
                                                      node.asset_key.encode()):
            self.ledger.refused(node.id, stage, "BAD_ASSET", host, **recorded(req, catalog, 401))
            log.warning("%s: wrong asset key for %s (%s)", host, node.id, stage)
            return text_reply(401, f"asset key required for {node.id}")
        if stage == "runtime" and self.tls_port and not req.tls:
            self.ledger.refused(node.id, stage, "NOT_TLS", host, **recorded(req, catalog, 403))
            log.warning("%s: the runtime overlay of %s asked over plain HTTP while TLS is on", host, node.id)
            return text_reply(403, f"TLS is on: the runtime overlay is served over HTTPS only (port {self.tls_port})")
        if stage == "runtime" and (self.secure or (self.follow_manifest_secure and catalog.secure)):
            if req.peer[1] >= 1024 or (node.addresses and host not in node.addresses):
                self.ledger.refused(node.id, stage, "BAD_PORT", host, **recorded(req, catalog, 403))
                log.warning("%s:%d: secure mode refuses the runtime overlay of %s", host, req.peer[1], node.id)
                return text_reply(403, "secure mode: the runtime overlay is served only to the node's own "
                                       "address from a privileged port (< 1024)")
        if encoding == "none":
            artifact = node.artifact(stage, "raw") or node.artifact(stage)
            if artifact is not None and artifact.name.endswith((".cpio.zst", ".cpio.gz")):
                try:
                    artifact = raw_artifact(artifact)       # decompressed once, kept in the store
                except RawUnavailable as e:
                    log.error("%s: %s of %s uncompressed: %s", host, stage, node.id, e)
                    self.ledger.refused(node.id, stage, "NOT_FOUND", host)
                    return text_reply(500, f"{stage} of {node.id} cannot be sent uncompressed")
        else:
            artifact = node.artifact(stage, encoding)
        if artifact is None:
            self.ledger.refused(node.id, stage, "NOT_FOUND", host, **recorded(req, catalog, 404))
            what = f"{encoding} encoding of " if encoding else ""
            return text_reply(404, f"no {what}{stage} published for {node.id}")
        if stage == "ipxe" and self.scaleout is not None:
            return self.script_reply(artifact, req, node, catalog)
        return self.file_reply(artifact, req, stage, node, catalog)

    def script_reply(self, artifact, req, node, catalog):
        """A node's script with the cache tier's header (its sources right now): built per request, never
        cached, so no validators."""
        try:
            with open(artifact.path, "rb") as f:
                script = f.read()
        except OSError as e:
            log.error("store file of %s ipxe is missing: %s", node.id, e)
            self.ledger.refused(node.id, "ipxe", "NOT_FOUND", req.peer[0], **recorded(req, catalog, 404))
            return text_reply(404, "ipxe file missing from the store")
        body = self.scaleout.script(script, node, catalog)
        log.info("%s:%d %s %s ipxe %s (+ cache tier header) -> 200", req.peer[0], req.peer[1], req.method, node.id,
                 artifact.name)
        transfer = self.ledger.began(node.id, "ipxe", artifact.name, req.peer[0], length=len(body),
                                     **recorded(req, catalog))
        self.ledger.ended(transfer, len(body), True)        # a small body: out with the headers
        return Reply(200, body, [("Content-Type", CONTENT_TYPES["ipxe"]), ("Cache-Control", "no-store")])

    def requested_mac(self, req):
        """The node's MAC: in the path, as ?wwid=, or from the ARP cache; raises Refusal (400)."""
        wwid = (req.args[0] if req.args else None) or req.query.get("wwid") or self.arp(req.peer[0])
        if not wwid:
            raise Refusal(text_reply(400, "which node? give the MAC in the path or as ?wwid="))
        mac = normalise_mac(wwid)
        if mac is None:
            raise Refusal(text_reply(400, f"{wwid!r} is not a MAC address"))
        return mac

    @staticmethod
    def requested_encoding(req):
        """The encoding ?compress= asks for (None: the default); raises Refusal (400) for an unknown one."""
        compress = req.query.get("compress")
        if not compress:
            return None
        encoding = ENCODING_NAMES.get(compress.lower())
        if encoding is None:
            raise Refusal(text_reply(400, f"compress={compress} is not one of zst, gz, none"))
        return encoding

    # -- store files ---------------------------------------------------------------------------------
    def file_reply(self, artifact, req, stage, node, catalog=None):
        """The reply sending a store file, with validators and ranges; recorded in the ledger."""
        try:
            # O_NOFOLLOW + regular-file check: a link planted in the store never leads outside it
            fd = os.open(artifact.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                os.close(fd)
                raise OSError(errno.EINVAL, "not a regular file")
        except OSError as e:
            log.error("store file of %s %s is missing: %s", node.id if node else "unknown", stage, e)
            if node:
                self.ledger.refused(node.id, stage, "NOT_FOUND", req.peer[0], **recorded(req, catalog, 404))
            return text_reply(404, f"{stage} file missing from the store")
        try:
            reply = self.ranged(fd, os.fstat(fd), artifact, req, stage, node, catalog or self.catalog)
        except BaseException:
            os.close(fd)
            raise
        if reply.file is None:
            os.close(fd)
        return reply

    def ranged(self, fd, st, artifact, req, stage, node, catalog):
        size = st.st_size
        etag = f'"{artifact.sha256}"'
        headers = [("Content-Type", CONTENT_TYPES.get(stage, "application/octet-stream")),
                   ("ETag", etag), ("Last-Modified", http_date(st.st_mtime)), ("Accept-Ranges", "bytes")]
        h = req.headers
        if not_modified(h, etag, st.st_mtime):
            self.record_bodiless(node, stage, artifact, req, catalog, 304)
            return Reply(304, headers=headers)
        start, end = 0, size
        code = 200
        rng = h.get("range")
        if rng and if_range_ok(h.get("if-range"), etag, st.st_mtime):
            parsed = parse_range(rng, size)
            if parsed == "unsatisfiable":
                self.record_bodiless(node, stage, artifact, req, catalog, 416)
                return Reply(416, b"", headers=[("Content-Range", f"bytes */{size}")] + headers[1:])
            if parsed is not None:
                start, end = parsed
                code = 206
                headers.append(("Content-Range", f"bytes {start}-{end - 1}/{size}"))
        host, port = req.peer
        log.info("%s:%d %s %s %s %s -> %d", host, port, req.method, node.id if node else "unknown", stage,
                 artifact.name, code)
        on_done = None
        if node:
            transfer = self.ledger.began(node.id, stage, artifact.name, host, code=code,
                                         length=0 if req.method == "HEAD" else end - start,
                                         **recorded(req, catalog))
            on_done = lambda sent, complete, at: self.ledger.ended(transfer, sent, complete, at=at)  # noqa: E731
        return Reply(code, headers=headers, file=FileBody(fd, start, end - start, on_done, clock=self.ledger.clock))

    def record_bodiless(self, node, stage, artifact, req, catalog, code):
        """A 304 or 416 answer: in the node's boot record too (begun and ended at once, no body)."""
        if node:
            transfer = self.ledger.began(node.id, stage, artifact.name, req.peer[0], code=code,
                                         **recorded(req, catalog))
            self.ledger.ended(transfer, 0, True)
