"""The TFTP side of provisioning: per-node iPXE scripts by MAC from the current manifest, and each read
request in the boot ledger, so a script fetched over TFTP starts a boot exactly as GET /ipxe does.

`TftpScripts` is mixed into the Provisioner (it uses its ledger, catalog and scale-out), whose bound
methods the TFTP server takes as resolve / on_request / on_end.
"""
import logging

from wwfast.server.catalog import normalise_mac

log = logging.getLogger("wwfast.serve")


class TftpScripts:
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
