"""What each simulated node fetches, in order, derived from what wwfast built for it.

A node's boot, as real firmware and the built files make it happen:
1. TFTP: the iPXE binary its DHCP answer names (lock-step at blksize 1432 as iPXE asks, or
   windowsize 4 as EDK2 UEFI asks); a failure makes the firmware retry (after `FIRMWARE_RETRY_MS`).
2. HTTP: its iPXE script at the URL DHCP gives iPXE (`/ipxe/${mac:hexhyp}?assetkey=${asset}`).
3. The script itself, interpreted here: its `set`, `kernel` and `initrd` lines in order, with `${...}`
   expanded as iPXE would for this node; a failed fetch goes to the script's `:failed` loop (its
   `sleep`, then the `:retry` label). All on the one keep-alive connection iPXE pools.
4. The node agent's first runtime overlay fetch, with the server, port and secure flag of the
   node's own /wwinit/config, read out of its system overlay (from a privileged source port when
   secure), on a new connection as curl makes it.
Each step names a reference file: the store file the manifest maps that URL to, whose sha256 is
checked against the manifest here once; the load generator then compares every byte it receives
with that file (so every node's bytes match the manifest's sha256).
"""
import re
import shlex
import sys
import urllib.parse

import zstandard
from harness import file_sha256

from .cluster import ROOT, node_uuid

sys.path.insert(0, str(ROOT / "tests"))
from helpers.newc import read_concatenated  # noqa: E402

FIRMWARE_RETRY_MS = 3000
AGENT_RETRY_MS = 2000
DEFAULT_ENCODING = {"ipxe": "raw", "kernel": "raw", "image": "zst", "system": "zst", "runtime": "zst"}
ENCODINGS = {"zst": "zst", "zstd": "zst", "gz": "gz", "gzip": "gz"}


class Step:
    __slots__ = ("kind", "host", "port", "ref", "restart", "delay_ms", "label", "args", "sha256")

    def __init__(self, kind, host, port, ref, label, args, sha256, restart=0, delay_ms=0):
        self.kind, self.host, self.port, self.ref, self.label = kind, host, port, ref, label
        self.args, self.sha256, self.restart, self.delay_ms = args, sha256, restart, delay_ms


class References:
    """Reference files by path, each checked once against the sha256 it must have."""

    def __init__(self):
        self.ids = {}
        self.paths = []

    def add(self, path, sha256):
        if path not in self.ids:
            if sha256 is not None and file_sha256(path) != sha256:
                raise SystemExit(f"{path}: its sha256 is not the manifest's {sha256}")
            self.ids[path] = len(self.paths)
            self.paths.append(path)
        return self.ids[path]


def artifact_for(node, url, store):
    """(store path, sha256) that serving `url` sends to `node`, per the manifest."""
    parts = urllib.parse.urlsplit(url)
    stage = parts.path.strip("/").split("/")[0]
    query = urllib.parse.parse_qs(parts.query)
    encoding = ENCODINGS.get((query.get("compress") or [""])[0], DEFAULT_ENCODING[stage])
    entry = node.artifacts[stage][encoding]
    return f"{store}/{entry.file}", entry.sha256


def expand(text, variables):
    return re.sub(r"\$\{([^}]+)\}", lambda m: variables.get(m.group(1), ""), text)


def script_fetches(script, variables):
    """[(command, url)] of the kernel/initrd lines up to `boot`, and the retry delay (s)."""
    fetches, delay = [], None
    for raw in script.splitlines():
        line = raw.split("||")[0].strip()
        if not line or line.startswith("#") or line.startswith(":"):
            continue
        words = line.split()
        if words[0] == "set" and len(words) >= 3:
            variables[words[1].split(":")[0]] = expand(" ".join(words[2:]), variables)
        elif words[0] in ("kernel", "initrd", "chain", "imgfetch"):
            # the image is the first word that expands to a URL (options such as --name take values)
            url = next(u for u in (expand(w, variables) for w in words[1:]) if "://" in u)
            fetches.append((words[0], url))
        elif words[0] == "sleep" and fetches and delay is None:
            delay = int(words[1])          # the first sleep after the fetches: the retry loop's
    return fetches, 10 if delay is None else delay


def agent_config(system_overlay_path):
    """The KEY=value pairs of /wwinit/config inside the node's system overlay (zstd newc; in secure mode
    two frames, two archives: the shared part, then the node's own)."""
    with open(system_overlay_path, "rb") as f:
        blob = zstandard.ZstdDecompressor().stream_reader(f, read_across_frames=True).read()
    for member in read_concatenated(blob):
        if member.name in (b"wwinit/config", b"./wwinit/config"):
            return {k: shlex.split(v)[0] if v.strip() else "" for k, _, v in
                    (line.partition("=") for line in member.data.decode().splitlines()
                     if "=" in line and not line.startswith("#"))}
    raise SystemExit(f"{system_overlay_path}: no wwinit/config in the system overlay")


def node_steps(i, node, store, refs, server, http_port, nbp_path, nbp_name, windowsize):
    """The ordered steps of node `i` (a records.PublishedNode), checking every reference on the way."""
    mac = node.macs[0]
    steps = [Step("tftp", server, 69, refs.add(nbp_path, None), "nbp", [nbp_name, "1432", str(windowsize)],
                  None, restart=0, delay_ms=FIRMWARE_RETRY_MS)]
    script_url = f"http://{server}:{http_port}/ipxe/{mac.replace(':', '-')}?assetkey="
    path, sha = artifact_for(node, script_url, store)
    steps.append(http_step(script_url, refs.add(path, sha), "ipxe", "pool", sha, restart=0,
                           delay_ms=FIRMWARE_RETRY_MS))
    variables = {"asset:uristring": "", "asset": "", "uuid": node_uuid(i), "mac:hexhyp": mac.replace(":", "-"),
                 "mac": mac}
    with open(path) as f:
        fetches, delay = script_fetches(f.read(), variables)
    first = len(steps)
    for command, url in fetches:
        stage = urllib.parse.urlsplit(url).path.strip("/").split("/")[0]
        apath, asha = artifact_for(node, url, store)
        steps.append(http_step(url, refs.add(apath, asha), stage, "pool", asha, restart=first,
                               delay_ms=delay * 1000))
    system_path, _ = artifact_for(node, "/system/x", store)
    config = agent_config(system_path)
    wwid = config.get("WWMAC") or mac
    agent_url = (f"http://{config['WWSERVER']}:{config['WWPORT']}/runtime/{wwid}"
                 f"?compress=gz&assetkey=&uuid={node_uuid(i)}")
    rpath, rsha = artifact_for(node, agent_url, store)
    steps.append(http_step(agent_url, refs.add(rpath, rsha), "agent", "priv" if config.get("WWSECURE") == "1"
                           else "fresh", rsha, restart=len(steps), delay_ms=AGENT_RETRY_MS))
    return steps


def http_step(url, ref, label, mode, sha, restart, delay_ms):
    parts = urllib.parse.urlsplit(url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    return Step("http", parts.hostname, parts.port or 80, ref, label, [mode, target], sha, restart, delay_ms)


def write_plan(path, nodes, refs, options):
    """`nodes`: [(index, address, start_ms, steps)] for one load generator process."""
    used = sorted({s.ref for _, _, _, steps in nodes for s in steps})
    with open(path, "w") as f:
        for name, value in options.items():
            f.write(f"option {name} {value}\n")
        for ref in used:
            f.write(f"ref {ref} {refs.paths[ref]}\n")
        for index, address, start_ms, steps in nodes:
            f.write(f"node {index} {address} {start_ms}\n")
            for s in steps:
                f.write(f"step {s.kind} {s.host} {s.port} {s.ref} {s.restart} {s.delay_ms} {s.label} "
                        f"{' '.join(s.args)}\n")
