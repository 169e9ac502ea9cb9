"""A published wwfast cluster of N simulated nodes, made the way a user makes one: config files, then
`wwfast image import`, then the define, build and compress stages as processes.

The image is a small bootable busybox tree with the real Debian kernel in /boot (the one
scripts/fetch-kernel.sh fetches for the QEMU tests) and a filler file of random bytes to reach the
asked image size (random: it does not compress, so the size on the wire is what was asked).
The state lives under a work directory keyed by its parameters; a second run with the same
parameters finds the stages current and skips them (they say why), so repeated benchmarks start fast.
"""
import os
import pathlib
import random
import shutil
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
from helpers.busybox_tree import make_busybox_tree  # noqa: E402
from wwfast import layout, records  # noqa: E402

HTTP_PORT = 9873
TFTP_PORT = 69
IMAGE = "storm"
NBP_DIR = "/usr/lib/ipxe"


def node_mac(i):
    n = i + 1
    return f"52:54:00:{n >> 16 & 255:02x}:{n >> 8 & 255:02x}:{n & 255:02x}"


def node_id(i):
    return f"n{i + 1:05d}"


def node_uuid(i):
    """What iPXE reads as ${uuid} (SMBIOS system UUID) on simulated node i."""
    return f"4c4c4544-0000-4000-8000-{i + 1:012x}"


def kernel_path():
    out = subprocess.run([str(ROOT / "scripts" / "fetch-kernel.sh")], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"no kernel for the image: {out.stderr.strip()}")
    return out.stdout.strip()


class ClusterSpec:
    """Parameters that make a different published state (the cache key)."""

    def __init__(self, nodes, image_mb, secure, addresses, server_address, nbp, cluster_block=""):
        self.nodes, self.image_mb, self.secure = nodes, image_mb, secure
        self.addresses, self.server_address, self.nbp = addresses, server_address, nbp
        self.cluster_block = cluster_block      # a `cluster:` settings block: scripts get the cache-tier branch

    def key(self):
        return (f"n{self.nodes}-img{self.image_mb:g}-{'secure' if self.secure else 'open'}-{self.server_address}"
                + ("-cachetier" if self.cluster_block else ""))


def write_conf(conf, spec, tftp_root):
    conf.mkdir(parents=True, exist_ok=True)
    (conf / "wwfast.yaml").write_text(f"""# written by benchmarks/bootstorm.py
ipaddr: {spec.server_address}
netmask: 255.255.0.0
warewulf:
  port: {HTTP_PORT}
  bind: {spec.server_address}
  secure: {'true' if spec.secure else 'false'}
  update interval: 60
tftp:
  enabled: true
  port: {TFTP_PORT}
  bind: {spec.server_address}
  tftproot: {tftp_root}
compression:
  zstd level: 3
  gzip: true
  threads: 0
""" + spec.cluster_block)
    lines = ["nodeprofiles:", "  default:", f"    image name: {IMAGE}",
             "    kernel:", "      args: [console=ttyS0, quiet]",
             "    system overlay: [wwinit, hostname, hosts, network, ssh.host_keys, issue, resolv, fstab]",
             "    runtime overlay: [hosts, ssh.authorized_keys, users]",
             "    network devices:", "      default: {device: eth0, netmask: 255.255.0.0}", "nodes:"]
    for i in range(spec.nodes):
        lines += [f"  {node_id(i)}:", "    profiles: [default]", "    network devices:", "      default:",
                  f"        hwaddr: \"{node_mac(i)}\"", f"        ipaddr: {spec.addresses[i]}"]
    text = "\n".join(lines) + "\n"
    path = conf / "nodes.yaml"
    if not path.exists() or path.read_text() != text:      # unchanged input: define stays current
        path.write_text(text)


def make_tree(tree, image_mb):
    make_busybox_tree(str(tree))
    kernel = kernel_path()
    (tree / "boot").mkdir(exist_ok=True)
    shutil.copy2(kernel, tree / "boot" / os.path.basename(kernel))
    # the archive holds busybox and the kernel too: the filler makes up the rest of the asked size
    filler = max(0, int(image_mb * (1 << 20)) - os.path.getsize(kernel) - os.path.getsize(tree / "bin" / "busybox"))
    (tree / "opt").mkdir(exist_ok=True)
    with open(tree / "opt" / "filler.bin", "wb") as f:
        rng = random.Random(20261201)
        for done in range(0, filler, 1 << 24):
            f.write(rng.randbytes(min(1 << 24, filler - done)))


def wwfast(conf, state, *args, log=None):
    cmd = [sys.executable, "-m", "wwfast.cli", *args, "--conf", str(conf), "--state", str(state)]
    return _run(cmd, log)


def stage(conf, state, name, log=None):
    return _run([sys.executable, "-m", f"stages.{name}", "--conf", str(conf), "--state", str(state)], log)


def _run(cmd, log):
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if log:
        log.write(out.stdout + out.stderr)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[2:4])} failed:\n{out.stdout}\n{out.stderr}")
    return out.stdout + out.stderr


def prepare(work, spec, say=print):
    """Conf, TFTP root and a published state for `spec` under `work`; returns their paths."""
    base = pathlib.Path(work) / spec.key()
    conf, state, tftp_root = base / "conf", base / "var", base / "tftp"
    tftp_root.mkdir(parents=True, exist_ok=True)
    nbp = tftp_root / spec.nbp
    if not nbp.exists():
        shutil.copy2(os.path.realpath(os.path.join(NBP_DIR, spec.nbp)), nbp)
    write_conf(conf, spec, tftp_root)
    log = open(base / "prepare.log", "a")
    try:
        if not (state / "images" / IMAGE).exists():
            say(f"# making the {spec.image_mb:g} MB image (busybox, the Debian kernel, random filler)")
            tree = base / "tree"
            shutil.rmtree(tree, ignore_errors=True)
            make_tree(tree, spec.image_mb)
            wwfast(conf, state, "image", "import", str(tree), IMAGE, log=log)
            shutil.rmtree(tree)
        for name in ("define", "build", "compress"):
            stage(conf, state, name, log=log)
    finally:
        log.close()
    return base, conf, state, tftp_root, records.read_manifest(layout.manifest(state))
