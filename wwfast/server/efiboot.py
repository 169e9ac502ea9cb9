"""The GRUB chain's HTTP routes (Warewulf's, for `warewulf: grubboot`), registered on the Provisioner.

    /grub/<mac>, /grub?wwid=<mac>     the node's rendered grub.cfg (unknown node: 404)
    /efiboot/shim.efi                 shim from the node's image (UEFI HTTP boot starts here)
    /efiboot/grub.efi, grubx64.efi... GRUB from the node's image (shim asks for its second stage here)
    /efiboot/grub.cfg                 the node's grub.cfg (what GRUB loaded from /efiboot/ reads)

/efiboot names no node in its path: the node comes from ?wwid=, else from the kernel's ARP table (the
client's address), as in Warewulf. The shim and GRUB binaries are the image's public boot loaders and
are sent without the asset key (firmware cannot send one); grub.cfg needs it when the node has one.
"""
import hmac
import logging

from wwfast.server.catalog import normalise_mac
from wwfast.server.routing import Refusal, route
from wwfast.server.replies import text_reply

log = logging.getLogger("wwfast.serve")

GRUB_NAMES = ("grub.efi", "grub-tpm.efi", "grubx64.efi", "grubia32.efi", "grubaa64.efi", "grubarm.efi")
EFI_FILES = {"shim.efi": "shim", "grub.cfg": "grub", **{name: "grubefi" for name in GRUB_NAMES}}


@route("grub")
def grub_route(provisioner, req):
    """/grub/<mac> or /grub?wwid=<mac>: the node's grub.cfg."""
    if len(req.args) > 1:
        return text_reply(404, f"no such route {req.path}")
    return _send(provisioner, req, "grub", provisioner.requested_mac(req))


@route("efiboot")
def efiboot_route(provisioner, req):
    """/efiboot/<file> (or /efiboot?file=): shim, GRUB or grub.cfg of the node asking."""
    name = req.args[-1] if req.args else req.query.get("file", "")
    stage = EFI_FILES.get(name)
    if stage is None or len(req.args) > 1:
        req.label = "efiboot"
        return text_reply(404, f"no EFI boot file {name!r}: one of {', '.join(sorted(EFI_FILES))}")
    wwid = req.query.get("wwid") or provisioner.arp(req.peer[0])
    if not wwid:
        raise Refusal(text_reply(400, "which node? give ?wwid=<mac> (the client's address is not in the "
                                      "ARP table)"))
    mac = normalise_mac(wwid)
    if mac is None:
        raise Refusal(text_reply(400, f"{wwid!r} is not a MAC address"))
    return _send(provisioner, req, stage, mac)


def _send(provisioner, req, stage, mac):
    req.label = stage
    if not provisioner.watcher.loaded:
        return text_reply(503, "nothing published yet (no STATE/publish/manifest.json)")
    catalog = provisioner.ledger.catalog_for(mac, stage, provisioner.catalog)
    node = catalog.by_mac.get(mac)
    host = req.peer[0]
    if node is None:
        log.info("%s: %s for unknown MAC %s", host, stage, mac)
        return text_reply(404, f"no node has MAC {mac}")
    if stage == "grub" and node.asset_key and not hmac.compare_digest(
            req.query.get("assetkey", "").encode(), node.asset_key.encode()):
        provisioner.ledger.refused(node.id, stage, "BAD_ASSET", host)
        log.warning("%s: wrong asset key for %s (%s)", host, node.id, stage)
        return text_reply(401, f"asset key required for {node.id}")
    artifact = node.artifact(stage)
    if artifact is None:
        provisioner.ledger.refused(node.id, stage, "NOT_FOUND", host)
        what = {"grub": "GRUB configuration (warewulf: grubboot is off?)", "shim": "shim in its image",
                "grubefi": "GRUB EFI binary in its image"}[stage]
        return text_reply(404, f"no {what} published for {node.id}")
    return provisioner.file_reply(artifact, req, stage, node)
