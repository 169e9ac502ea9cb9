"""`wwfast configure hosts`: the cluster's block of the server's /etc/hosts, between marker lines.

Everything outside the markers is the admin's and is kept byte for byte; a file without the markers gets
the block appended. Names per node network device with an address: the node id (primary device),
`<id>-<network>`, `<id>-<device>`; `<id>-ipmi` for its BMC; the server as its host name and `wwfast`.
"""
import socket

from wwfast.errors import UsageError

BEGIN = "# BEGIN wwfast cluster hosts"
END = "# END wwfast cluster hosts"
BEGIN_LINE = BEGIN + " (written by `wwfast configure hosts` from the node file: edit that, not these lines)"
DEFAULT_PATH = "/etc/hosts"


def _line(address, names):
    seen = []
    for name in names:
        if name and name not in seen:
            seen.append(name)
    return f"{address:<15} {' '.join(seen)}"


def server_names(settings):
    host = socket.gethostname()
    return [settings.fqdn, host.split(".")[0], "wwfast"]


def cluster_block(nodes, settings, names=None):
    """The lines between the markers (`nodes`: {id: wwfast.records.Node})."""
    lines = ["# wwfast server", _line(settings.address, names if names is not None else server_names(settings))]
    for node_id in sorted(nodes):
        node = nodes[node_id]
        entries = []
        for netname, dev in node.network_devices.items():
            names = [node_id if dev.primary else "", f"{node_id}-{netname}",
                     f"{node_id}-{dev.device}" if dev.device else ""]
            for address in (dev.ipaddr, dev.ipaddr6):
                if address:
                    entries.append(_line(address.split("/")[0], names))
        ipmi = node.ipmi.get("ipaddr")
        if ipmi:
            entries.append(_line(ipmi, [f"{node_id}-ipmi"]))
        if entries:
            lines.append(f"# node {node_id}")
            lines.extend(entries)
    return lines


def merge(current, block):
    """`current` (text or None) with the cluster block replaced (or appended)."""
    lines = (current or "").splitlines()
    begins = [i for i, line in enumerate(lines) if line.startswith(BEGIN)]
    ends = [i for i, line in enumerate(lines) if line.startswith(END)]
    new_block = [BEGIN_LINE, *block, END]
    if not begins and not ends:
        head = lines + ([""] if lines and lines[-1].strip() else [])
        return "\n".join(head + new_block) + "\n"
    if len(begins) != 1 or len(ends) != 1 or ends[0] < begins[0]:
        where = ", ".join(str(i + 1) for i in sorted(begins + ends))
        raise UsageError(f"the wwfast markers in the hosts file are not one BEGIN line followed by one END line "
                         f"(lines {where}); fix the file by hand, nothing was written")
    tail = "\n".join(lines[ends[0] + 1:])
    text = "\n".join(lines[:begins[0]] + new_block)
    return text + "\n" + (tail + "\n" if tail else "")


def render(current, nodes, settings, names=None):
    return merge(current, cluster_block(nodes, settings, names))
