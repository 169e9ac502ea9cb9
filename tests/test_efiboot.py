"""The GRUB chain (warewulf: grubboot) through the real stages: the build renders each node's grub.cfg and
takes shim and GRUB from the image, compress publishes them, and serve's /grub and /efiboot routes answer
them (node by path, ?wwid= or the ARP table; the asset key guards grub.cfg)."""
import json
import os

import pytest

from helpers.cluster import Cluster
from wwfast.builder import demo_image
from wwfast.server.catalog import CatalogWatcher
from wwfast.server.ledger import BootLedger
from wwfast.server.provision import Provisioner

MAC1, MAC2 = "52:54:00:ef:00:01", "52:54:00:ef:00:02"
SHIM, GRUB = b"MZ shim of the image\n" * 50, b"MZ grub of the image\n" * 80
PEER1 = ("10.0.5.11", 40000)        # in the fake ARP table as MAC1


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


SETTINGS = """\
ipaddr: 10.0.5.1
netmask: 255.255.255.0
warewulf:
  port: 9999
  secure: false
  grubboot: {grubboot}
compression:
  gzip: false
"""
NODES = f"""\
nodeprofiles:
  default:
    image name: efi
    kernel:
      args: [console=ttyS0, quiet]
    system overlay: [wwinit, hostname]
nodes:
  g1:
    profiles: [default]
    network devices:
      default: {{hwaddr: "{MAC1}", ipaddr: 10.0.5.11}}
  g2:
    profiles: [default]
    asset key: tag-g2
    tags: {{GrubMenuEntry: halt}}
    network devices:
      default: {{hwaddr: "{MAC2}", ipaddr: 10.0.5.12}}
"""


@pytest.fixture(scope="module")
def grub_cluster(tmp_path_factory, kernel_path, kernel_modules):
    base = tmp_path_factory.mktemp("grubboot")
    conf, state, tree = base / "conf", base / "state", base / "tree"
    write(conf / "wwfast.yaml", SETTINGS.format(grubboot="true"))
    write(conf / "nodes.yaml", NODES)
    demo_image.make_demo_image(tree, kernel_path, kernel_modules)
    # Debian's signed paths; GRUB through a link, as the image's alternatives would have it
    (tree / "usr/lib/shim").mkdir(parents=True)
    (tree / "usr/lib/shim/shimx64.efi.signed").write_bytes(SHIM)
    (tree / "usr/lib/grub/x86_64-efi-signed").mkdir(parents=True)
    (tree / "boot/efi/EFI/debian").mkdir(parents=True)
    (tree / "usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed").write_bytes(GRUB)
    os.symlink("/usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed", tree / "boot/efi/EFI/debian/grubx64.efi")
    cluster = Cluster(conf, state)
    cluster.import_image(tree, "efi")
    cluster.output = cluster.publish()
    return cluster


def provisioner(state):
    watcher = CatalogWatcher(str(state))
    watcher.check()
    return Provisioner(watcher, BootLedger(str(state)), arp={PEER1[0]: MAC1}.get)


def ask(prov, url, peer=("10.0.5.99", 40000)):
    reply, label = prov.answer("GET", url.encode(), {}, peer)
    if reply.file is None:
        return reply.code, label, reply.body
    f = reply.file
    data = os.pread(f.fd, f.remaining, f.offset)
    f.sent = len(data)
    f.close(complete=True)
    return reply.code, label, data


def test_build_renders_each_nodes_grub_cfg_and_takes_shim_and_grub_from_the_image(grub_cluster):
    state = grub_cluster.state
    build = json.loads((state / "build/build.json").read_text())
    assert build["nodes"]["g1"]["grub"] == "grub/g1.cfg"
    assert build["nodes"]["g1"]["shim"] == "efiboot/efi/shim.efi" == build["nodes"]["g2"]["shim"]
    assert (state / "build/efiboot/efi/shim.efi").read_bytes() == SHIM
    assert (state / "build/efiboot/efi/grub.efi").read_bytes() == GRUB
    cfg = (state / "build/grub/g1.cfg").read_text()
    assert 'set base="(http,10.0.5.1:9999)"' in cfg and "set default=single-stage" in cfg
    assert f'linux "${{base}}/kernel/{MAC1}?${{query}}" wwid={MAC1} console=ttyS0 quiet' in cfg
    assert f'"${{base}}/runtime/{MAC1}?${{query}}"' in cfg
    assert "set default=halt" in (state / "build/grub/g2.cfg").read_text()     # the GrubMenuEntry tag
    assert "GRUB configurations: 2 written" in grub_cluster.output
    assert "build: current (inputs unchanged)" in grub_cluster.stage("build")
    again = grub_cluster.stage("build", "--force")     # rerun: each unchanged grub.cfg is left as it is
    assert "GRUB configurations: 0 written, 2 current" in again
    manifest = grub_cluster.manifest()
    assert set(manifest["nodes"]["g1"]["artifacts"]) >= {"grub", "shim", "grubefi"}


def test_routes_answer_by_path_wwid_and_arp(grub_cluster):
    prov = provisioner(grub_cluster.state)
    cfg = (grub_cluster.state / "build/grub/g1.cfg").read_bytes()
    assert ask(prov, f"/grub/{MAC1}") == (200, "grub", cfg)
    assert ask(prov, "/grub?wwid=52-54-00-EF-00-01") == (200, "grub", cfg)
    assert ask(prov, f"/efiboot/shim.efi?wwid={MAC1}") == (200, "shim", SHIM)
    assert ask(prov, "/efiboot//grubx64.efi", peer=PEER1) == (200, "grubefi", GRUB)   # shim's double slash
    assert ask(prov, "/efiboot/grub.cfg", peer=PEER1) == (200, "grub", cfg)
    assert ask(prov, f"/efiboot?file=grub.efi&wwid={MAC1}") == (200, "grubefi", GRUB)
    status = json.loads(prov.ledger.status_json(prov.catalog))["nodes"]["g1"]
    assert status["stage"] == "grubefi" and status["ipaddr"] == "10.0.5.99"


@pytest.mark.parametrize("url, code", [
    ("/grub/52:54:00:ef:00:99", 404),           # no such node
    ("/grub/not-a-mac", 400),
    ("/efiboot/shim.efi", 400),                 # no ?wwid= and the client is not in the ARP table
    ("/efiboot/bootx64.efi?wwid=52:54:00:ef:00:01", 404),
    ("/efiboot/shim.efi?wwid=zz", 400),
    ("/grub/52:54:00:ef:00:01/extra", 404),
])
def test_bad_requests(grub_cluster, url, code):
    assert ask(provisioner(grub_cluster.state), url)[0] == code


def test_asset_key_guards_grub_cfg_not_the_boot_loaders(grub_cluster):
    prov = provisioner(grub_cluster.state)
    assert ask(prov, f"/grub/{MAC2}")[0] == 401
    assert json.loads(prov.ledger.status_json(prov.catalog))["nodes"]["g2"]["sent"] == "BAD_ASSET"
    assert ask(prov, f"/grub/{MAC2}?assetkey=tag-g2")[0] == 200
    assert ask(prov, f"/efiboot/shim.efi?wwid={MAC2}")[:2] == (200, "shim")


def test_grubboot_off_removes_the_chain(grub_cluster, tmp_path):
    """Turned off: the build leaves no GRUB files and the routes say why they have nothing."""
    conf = grub_cluster.conf
    write(conf / "wwfast.yaml", SETTINGS.format(grubboot="false"))
    try:
        grub_cluster.publish()
        state = grub_cluster.state
        assert not (state / "build/grub").exists() and not (state / "build/efiboot").exists()
        assert "grub" not in grub_cluster.manifest()["nodes"]["g1"]["artifacts"]
        code, _, body = ask(provisioner(state), f"/grub/{MAC1}")
        assert code == 404 and b"grubboot is off" in body
    finally:
        write(conf / "wwfast.yaml", SETTINGS.format(grubboot="true"))
        grub_cluster.publish()
