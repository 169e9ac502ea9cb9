"""Provisioning: request in, reply out. Warewulf's rules over the published manifest, no sockets.

The transport (wwfast.server.http) hands `Provisioner.answer` a parsed request and sends the Reply
it gets back; the TFTP server asks `tftp_resolve` for per-node scripts and reports each read
request to `tftp_requested`. Everything a node does is recorded in the boot ledger.

Adding an HTTP route: write a method taking a `ProvisionRequest` and returning a Reply, and
decorate it with `@route("first-path-segment")`. `req.args` holds the path segments after the
first (already unquoted and checked: no '.', '..', slashes or NULs), `req.query` the query
parameters (first value of each), `req.label` the metrics label (the route name unless the
handler sets another). Node routes resolve the node with `self.node_for(req, stage)`.
"""
import errno
import hmac
import json
import logging
import os
import stat
import urllib.parse

import httptools

from wwfast.server.arp import arp_lookup
from wwfast.server.catalog import STAGES, normalise_mac
from wwfast.server.conditional import if_range_ok, not_modified, parse_range
from wwfast.server.replies import FileBody, Reply, http_date, json_reply, text_reply
from wwfast.server.uncompressed import RawUnavailable, raw_artifact

log = logging.getLogger("wwfast.serve")

STAGE_ALIASES = {"container": "image", "overlay-system": "system", "overlay-runtime": "runtime"}
ENCODING_NAMES = {"zst": "zst", "zstd": "zst", "gz": "gz", "gzip": "gz", "none": "none"}
CONTENT_TYPES = {"ipxe": "text/plain; charset=utf-8", "grub": "text/plain; charset=utf-8"}
ROUTES = {}          # first path segment -> Provisioner method
KEEP_GENERATIONS = 3  # previous generations whose blobs stay reachable (store files outlive them by publish's grace)


def route(*names):
    """Register the decorated Provisioner method as the handler of /<name>/... for each name."""
    def register(method):
        for name in names:
            ROUTES[name] = method
        return method
    return register


class ProvisionRequest:
    """One parsed HTTP request as the routes see it."""
    __slots__ = ("method", "path", "name", "args", "query", "headers", "peer", "label", "tls")

    def __init__(self, method, path, name, args, query, headers, peer):
        self.method, self.path, self.name, self.args = method, path, name, args
        self.query, self.headers, self.peer = query, headers, peer
        self.label = name
        self.tls = False


class Refusal(Exception):
    """A route's early answer (an error reply), raised from the helpers the routes share."""

    def __init__(self, reply):
        super().__init__(reply.code)
        self.reply = reply


class Provisioner:
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
        req = self.parse(method, url, headers, peer)
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

    @staticmethod
    def parse(method, url, headers, peer):
        """A ProvisionRequest, or the 400 Reply for a target we refuse to interpret."""
        try:
            parsed = httptools.parse_url(url)
        except httptools.HttpParserInvalidURLError:
            return text_reply(400, "malformed URL")
        path = (parsed.path or b"/").decode("latin-1")
        query = urllib.parse.parse_qs((parsed.query or b"").decode("latin-1"), keep_blank_values=True)
        segments = []
        for raw in path.split("/"):
            if not raw:
                continue             # collapse '//' (shim asks for .../efiboot//grub.efi)
            seg = urllib.parse.unquote(raw, errors="strict") if "%" in raw else raw
            if seg in (".", "..") or "/" in seg or "\\" in seg or "\0" in seg:
                return text_reply(400, "path segments may not be '.', '..' or contain slashes")
            segments.append(seg)
        name = segments[0] if segments else ""
        return ProvisionRequest(method, path, name, segments[1:], {k: v[0] for k, v in query.items()},
                                headers, peer)

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
            on_done = lambda sent, complete: self.ledger.ended(transfer, sent, complete)  # noqa: E731
        return Reply(code, headers=headers, file=FileBody(fd, start, end - start, on_done))

    def record_bodiless(self, node, stage, artifact, req, catalog, code):
        """A 304 or 416 answer: in the node's boot record too (begun and ended at once, no body)."""
        if node:
            transfer = self.ledger.began(node.id, stage, artifact.name, req.peer[0], code=code,
                                         **recorded(req, catalog))
            self.ledger.ended(transfer, 0, True)

    # -- service routes --------------------------------------------------------------------------
    @route("status")
    def status_route(self, req):
        if req.args:
            return no_such_route(req)
        node_id = req.query.get("node")
        if node_id is None and self.scaleout is not None:      # every server's boot records too (etcd)
            doc = self.scaleout.merge_status(self.ledger.status_document(self.catalog))
            return json_reply((json.dumps(doc, sort_keys=True, indent=1) + "\n").encode())
        if node_id is None:
            return json_reply(self.ledger.status_json(self.catalog))
        doc = self.ledger.node_document(self.catalog, node_id)
        if doc is None:
            return text_reply(404, f"no node {node_id!r}: not in the published manifest and never seen")
        return json_reply((json.dumps(doc, sort_keys=True, indent=1) + "\n").encode())

    @route("metrics")
    def metrics_route(self, req):
        if req.args:
            return no_such_route(req)
        body = self.ledger.metrics_text(self.catalog).encode()
        return Reply(200, body, [("Content-Type", "text/plain; version=0.0.4; charset=utf-8")])

    @route("healthz")
    def healthz_route(self, req):
        if req.args:
            return no_such_route(req)
        if not self.watcher.loaded:
            return text_reply(503, "no manifest published yet")
        worker = "" if self.worker is None else f" worker={self.worker}"
        return text_reply(200, f"ok generation={self.catalog.generation}{worker}")

    # -- TFTP: per-node iPXE scripts by MAC ----------------------------------------------------
    def tftp_resolve(self, path):
        """The TFTP server's resolve(path): a node's iPXE script by MAC, from the current manifest.

        Answers the names script_mac() knows: the node's script, or the unknown-node script for a
        MAC no node has. Anything else is None, so the TFTP server looks in its root directory.
        The script fetch starts the node's boot, as GET /ipxe does: its later HTTP requests come
        from the generation this script came from.
        """
        mac = script_mac(path)
        if mac is None:
            return None
        catalog = self.ledger.catalog_for(mac, "ipxe", self.catalog)
        node = catalog.by_mac.get(mac)
        artifact = node.artifact("ipxe") if node else catalog.unknown_ipxe
        if artifact is None:
            return None
        try:
            with open(artifact.path, "rb") as f:
                script = f.read()
        except OSError as e:
            log.error("TFTP %s: store file missing: %s", path, e)
            return None
        if node is not None and self.scaleout is not None:
            script = self.scaleout.script(script, node, catalog)
        return script

    def tftp_requested(self, path, client, result, nbytes):
        """The TFTP server's on_request: every read request counts in /metrics; a node's script fetched
        by MAC shows in /status exactly as GET /ipxe does (stage ipxe, client address, boot start)."""
        mac = script_mac(path) if path is not None else None
        stage = "bad" if path is None else "ipxe" if mac else "file"
        self.ledger.metrics.tftp_request(stage, result, nbytes)
        if mac is None or result != "ok":
            return
        # the catalog the resolver just pinned the node to: the script sent came from it
        node = self.ledger.pinned(mac, self.catalog).by_mac.get(mac)
        artifact = node.artifact("ipxe") if node else None
        if artifact is None:      # unknown MAC (the unknown-node script), or a same-named file in the root
            log.info("%s:%d TFTP %s: no node script of MAC %s sent", client[0], client[1], path, mac)
            return
        log.info("%s:%d TFTP %s ipxe %s", client[0], client[1], node.id, artifact.name)
        return self.ledger.began(node.id, "ipxe", artifact.name, client[0], length=nbytes, protocol="tftp",
                                 generation=self.ledger.pinned(mac, self.catalog).generation)

    def tftp_ended(self, transfer, result, nbytes):
        """The TFTP server's on_end: how a script transfer `tftp_requested` recorded ended (`nbytes`
        acknowledged by the client; `result` "ok" or why it was cut short)."""
        self.ledger.ended(transfer, nbytes, result == "ok" and nbytes == transfer.length, reason=result)


def recorded(req, catalog, code=None):
    """What a boot record keeps of an HTTP request besides node, stage, file and client."""
    out = {"generation": catalog.generation if catalog is not None else "",
           "protocol": "https" if req.tls else "http", "method": req.method}
    if code is not None:
        out["code"] = code
    return out


def no_such_route(req):
    req.label = "other"
    return text_reply(404, f"no such route {req.path}")


def script_mac(path):
    """The MAC of a per-node iPXE script name asked over TFTP, or None for any other file.

    `<mac>.ipxe`, `ipxe/<mac>` and `ipxe/<mac>.ipxe` (MAC with ':' or '-', any case).
    """
    name = path.lstrip("/")
    in_ipxe_dir = name.startswith("ipxe/")
    if in_ipxe_dir:
        name = name[5:]
    if name.endswith(".ipxe"):
        name = name[:-5]
    elif not in_ipxe_dir:
        return None          # a bare name without .ipxe is a file in the TFTP root
    return normalise_mac(name)


# Route modules register on import (kept last: they import this module's route table).
from wwfast.server import blobs, efiboot  # noqa: E402,F401  /blob; /grub, /efiboot
