"""The define stage: validation (file, line, field), atomic output, skip-when-current, Warewulf files as is."""
import json
import pathlib
import subprocess
import sys

import pytest
from hypothesis import given, settings as hsettings, strategies as st

from stages import define as define_stage
from wwfast import canonjson, records
from wwfast.builder import inventory
from wwfast.define import nodes
from wwfast.errors import ConfigError

ROOT = pathlib.Path(__file__).resolve().parent.parent

# Warewulf's packaged default profile plus two nodes from its test fixtures (reference B1), unmodified.
WAREWULF_NODES_CONF = """\
nodeprofiles:
  default:
    comment: This profile is automatically included for each node
    runtime overlay: [hosts, ssh.authorized_keys]
    system overlay: [wwinit, wwclient, hosts, fstab, hostname, ssh.host_keys, issue, resolv,
                     udev.netname, systemd.netname, ifcfg, ifupdown, NetworkManager, wicked, ignition]
    kernel:
      args: [quiet, crashkernel=no, net.ifnames=1]
    init: /sbin/init
    root: initramfs
    ipxe template: default
    ipmi:
      template: ipmitool.tmpl
    resources:
      fstab:
        - {spec: "warewulf:/home", file: /home, vfstype: nfs, mntops: "defaults,nofail"}
        - {spec: "warewulf:/opt",  file: /opt,  vfstype: nfs, mntops: "defaults,noauto,nofail,ro"}
nodes:
  node1:
    profiles: [default]
    image name: rockylinux-9
    ipmi: {username: user, password: password, ipaddr: 192.168.4.21, netmask: 255.255.255.0,
           gateway: 192.168.4.1, write: "true", tags: {bit-rate: "115.2"}}
    network devices:
      default:   {device: wwnet0, hwaddr: "e6:92:39:49:7b:03", ipaddr: 192.168.3.21, ipaddr6: "2001:db8::111",
                  netmask: 255.255.255.0, tags: {DNS1: 1.1.1.1}}
      secondary: {device: wwnet1, hwaddr: "9a:77:29:73:14:f1", ipaddr: 192.168.3.22}
    primary network: default
    tags: {localtime: UTC, IPXEMenuEntry: dracut}
    disks:
      /dev/vda:
        wipe_table: true
        partitions:
          scratch: {should_exist: true}
          swap:    {number: "1", size_mib: "1024"}
    filesystems:
      /dev/disk/by-partlabel/scratch: {format: btrfs, path: /scratch, wipe_filesystem: true}
      /dev/disk/by-partlabel/swap:    {format: swap, path: swap}
  node2:
    profiles: [default]
    discoverable: "true"
    asset key: "SYSTEM-ASSET-TAG"
"""

GOOD = """\
nodeprofiles:
  default:
    image name: demo
    system overlay: [wwinit]
nodes:
  n1:
    profiles: [default]
    network devices:
      default: {hwaddr: "52:54:00:00:00:01", ipaddr: 10.0.2.21}
  n2:
    profiles: [default]
    network devices:
      default: {hwaddr: "52:54:00:00:00:02", ipaddr: 10.0.2.22}
"""


def define(conf, state, warnings=None):
    """nodes.define with the names the define stage hands in (imported images, overlays)."""
    return nodes.define(str(conf), inventory.image_names(str(state)), inventory.overlay_names(str(conf)), warnings)


def read_db(state):
    return json.loads((state / "define" / "nodes.json").read_bytes())


def make_conf(tmp_path, text, name="nodes.yaml"):
    conf = tmp_path / "conf"
    conf.mkdir(exist_ok=True)
    (conf / name).write_text(text)
    return conf


def test_warewulf_nodes_conf_accepted_as_is(tmp_path):
    conf = make_conf(tmp_path, WAREWULF_NODES_CONF, name="nodes.conf")
    warnings = []
    db = define(conf, tmp_path / "var", warnings)
    n1, n2 = db["node1"], db["node2"]
    assert n1["image name"] == "rockylinux-9" and n1["profiles"] == ["default"]
    assert n1["kernel"]["args"] == ["quiet", "crashkernel=no", "net.ifnames=1"]
    assert n1["ipmi"]["template"] == "ipmitool.tmpl" and n1["ipmi"]["write"] is True
    assert records.Node.from_json(n1).macs == ["e6:92:39:49:7b:03", "9a:77:29:73:14:f1"]
    assert n1["network devices"]["default"]["ipaddr6"] == "2001:db8::111"
    assert n1["disks"]["/dev/vda"]["partitions"]["swap"]["size_mib"] == "1024"
    assert n2["discoverable"] is True and n2["asset key"] == "SYSTEM-ASSET-TAG"
    assert n2["comment"] == ""  # the profile's comment is not inherited
    assert len(n2["resources"]["fstab"]) == 2
    # every overlay of Warewulf's default profile exists in wwfast under its name: all kept, no warning
    assert n1["system overlay"][:3] == ["wwinit", "wwclient", "hosts"] and "NetworkManager" in n1["system overlay"]
    assert not [w for w in warnings if "overlay" in w], warnings


@pytest.mark.parametrize("text, expected", [
    ("nodes:\n  n1: {profiles: [default}\n", "nodes.yaml:2: YAML syntax error"),
    ("nodes:\n  n1:\n    image nme: x\n", 'nodes.yaml:3: nodes.n1.image nme: unknown key "image nme" (did you mean "image name"?)'),
    ("nodess: {}\n", 'nodes.yaml:1: nodess: unknown key "nodess" (did you mean "nodes"?)'),
    ("nodes:\n  n1:\n    network devices:\n      default: {hwaddr: zz}\n",
     'nodes.yaml:4: nodes.n1.network devices.default.hwaddr: bad MAC "zz"'),
    ("nodes:\n  n1:\n    network devices:\n      default:\n        ipaddr: 10.0.0.300\n",
     'nodes.yaml:5: nodes.n1.network devices.default.ipaddr: bad IPv4 address "10.0.0.300"'),
    ("nodes:\n  n1:\n    network devices:\n      default:\n        netmask: 255.0.255.0\n",
     'nodes.yaml:5: nodes.n1.network devices.default.netmask: bad netmask "255.0.255.0"'),
    ("nodes:\n  n1:\n    ipmi:\n      gateway: gw\n", 'nodes.yaml:4: nodes.n1.ipmi.gateway: bad IPv4 address "gw"'),
    ("nodes:\n  n1:\n    network devices: {a: {hwaddr: \"52:54:00:00:00:01\"}}\n"
     "  n2:\n    network devices: {b: {hwaddr: \"52:54:00:00:00:01\"}}\n",
     "nodes.yaml:5: nodes.n2.network devices.b.hwaddr: MAC 52:54:00:00:00:01 of node n2 is already used by n1"),
    ("nodeprofiles:\n  p:\n    network devices:\n      default: {ipaddr: 10.0.0.5}\n"
     "nodes:\n  n1: {profiles: [p]}\n  n2: {profiles: [p]}\n",
     "nodes.yaml:4: nodeprofiles.p.network devices.default.ipaddr: IP address 10.0.0.5 of node n2 is already used by n1"),
    ("nodes:\n  n1:\n    profiles: [gone]\n", 'nodes.yaml:3: nodes.n1.profiles: profile "gone" does not exist'),
    ("nodeprofiles:\n  a: {profiles: [b]}\n  b: {profiles: [a]}\n", "nodes.yaml:3: nodeprofiles.b.profiles: profile cycle: a -> b -> a"),
    ('nodes:\n  "": {}\n', "nodes.yaml:2: nodes.: empty node name"),
    ('nodeprofiles:\n  "": {}\n', "nodes.yaml:2: nodeprofiles.: empty profile name"),
    ('nodes:\n  n1:\n    network devices:\n      "": {device: eth0}\n',
     "nodes.yaml:4: nodes.n1.network devices.: empty name"),
    ("nodes:\n  n1: {}\n  n1: {}\n", 'nodes.yaml:3: n1: key "n1" is defined twice'),
    ("nodes:\n  n[1-: {}\n", "nodes.yaml:2: nodes.n[1-: bad hostlist"),
    ("nodes:\n  bad/name: {}\n", 'nodes.yaml:2: nodes.bad/name: bad node name "bad/name"'),
    ("nodes:\n  n1: [a, b]\n", "nodes.yaml:2: nodes.n1: must be a mapping of fields"),
    ("nodeprofiles:\n  p: {discoverable: true}\n", 'nodes.yaml:2: nodeprofiles.p.discoverable: "discoverable" can be set on a node only'),
])
def test_validation_errors_name_file_line_field(tmp_path, text, expected):
    conf = make_conf(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        define(conf, tmp_path / "var")
    assert f"{conf}/{expected}" in str(info.value), str(info.value)


def fake_import(state, name):
    """An imported image as docs/formats.md lays it out (rootfs/ + image.json)."""
    (state / "images" / name / "rootfs").mkdir(parents=True)
    (state / "images" / name / "image.json").write_text('{"source": "test"}\n')


def test_unknown_image_checked_once_images_exist(tmp_path):
    conf = make_conf(tmp_path, GOOD.replace("image name: demo", "image name: dmeo"))
    state = tmp_path / "var"
    define(conf, state)  # no image imported yet: not checked
    fake_import(state, "demo")
    with pytest.raises(ConfigError) as info:
        define(conf, state)
    assert f'{conf}/nodes.yaml:3: nodeprofiles.default.image name: unknown image "dmeo"' in str(info.value)
    assert 'did you mean "demo"' in str(info.value)


def test_unknown_overlay_names_the_list_item(tmp_path):
    conf = make_conf(tmp_path, GOOD.replace("[wwinit]", "[wwinit, nosuch]"))
    (conf / "overlays" / "site").mkdir(parents=True)
    with pytest.raises(ConfigError) as info:
        define(conf, tmp_path / "var")
    assert f'{conf}/nodes.yaml:4: nodeprofiles.default.system overlay.1: unknown overlay "nosuch"' in str(info.value)


def test_one_bad_profile_is_reported_once_not_per_node(tmp_path):
    text = "nodeprofiles:\n  p: {system overlay: [nosuch]}\nnodes:\n  n[1-500]: {profiles: [p]}\n"
    conf = make_conf(tmp_path, text)
    (conf / "overlays" / "site").mkdir(parents=True)
    with pytest.raises(ConfigError) as info:
        define(conf, tmp_path / "var")
    assert str(info.value).count("unknown overlay") == 1


def run_stage(conf, state, *extra):
    return subprocess.run([sys.executable, "-m", "stages.define", "--conf", str(conf), "--state", str(state), *extra],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_stage_writes_canonical_db_then_skips_when_current(tmp_path, capsys):
    conf, state = make_conf(tmp_path, GOOD), tmp_path / "var"
    out = run_stage(conf, state)  # the real entry point once
    assert out.returncode == 0, out.stderr
    assert "define: running (no record of a previous run)" in out.stdout
    raw = (state / "define" / "nodes.json").read_bytes()
    db = json.loads(raw)
    assert db["format"] == 1 and list(db["nodes"]) == ["n1", "n2"]
    assert raw == (json.dumps(db, sort_keys=True, indent=1) + "\n").encode()
    assert read_db(state) == db

    assert define_stage.main(["--conf", str(conf), "--state", str(state)]) == 0
    assert "define: current (inputs unchanged)" in capsys.readouterr().out

    (conf / "nodes.yaml").write_text(GOOD.replace("10.0.2.22", "10.0.2.29"))
    assert define_stage.main(["--conf", str(conf), "--state", str(state)]) == 0
    assert "define: running (1 input(s) changed: nodes.yaml)" in capsys.readouterr().out
    assert read_db(state)["nodes"]["n2"]["network devices"]["default"]["ipaddr"] == "10.0.2.29"

    fake_import(state, "demo")
    assert define_stage.main(["--conf", str(conf), "--state", str(state)]) == 0
    assert "define: running (the imported images changed)" in capsys.readouterr().out
    stamp = json.loads((state / "stages" / "define.stamp").read_text())
    assert stamp["ok"] and stamp["facts"]["the imported images"] == ["demo"]

    assert define_stage.main(["--conf", str(conf), "--state", str(state), "--force"]) == 0
    assert "define: running (forced)" in capsys.readouterr().out


def test_stage_error_exits_nonzero_and_writes_nothing(tmp_path):
    conf, state = make_conf(tmp_path, GOOD), tmp_path / "var"
    assert run_stage(conf, state).returncode == 0
    before = {p.name: p.read_bytes() for p in (state / "define").iterdir() if p.name != ".lock"}
    (conf / "nodes.yaml").write_text(GOOD.replace('"52:54:00:00:00:02"', '"52:54:00:00:00:zz"'))
    out = run_stage(conf, state)
    assert out.returncode == 1
    assert f'{conf}/nodes.yaml:13: nodes.n2.network devices.default.hwaddr: bad MAC "52:54:00:00:00:zz"' in out.stderr
    assert "nothing written" in out.stderr
    after = {p.name: p.read_bytes() for p in (state / "define").iterdir() if p.name != ".lock"}
    assert after == before


def test_missing_conf_dir_or_node_file_is_an_error_naming_the_path(tmp_path):
    with pytest.raises(ConfigError) as info:
        define(tmp_path / "none", tmp_path / "var")
    assert f"{tmp_path / 'none'}: the configuration directory does not exist" in str(info.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError) as info:
        define(tmp_path / "empty", tmp_path / "var")
    assert f"{tmp_path / 'empty' / 'nodes.yaml'}: no node file" in str(info.value)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=25)


@hsettings(max_examples=300, deadline=None)
@given(json_values)
def test_canonical_json_matches_the_standard_library(value):
    assert canonjson.dumps(value) == json.dumps(value, sort_keys=True, indent=1)


def test_canonical_json_with_shared_subtrees():
    shared = {"b": [1, 2], "a": {"x": "é"}}
    value = {"n1": shared, "n2": {"deeper": shared}, "n3": shared}
    assert canonjson.dumps(value) == json.dumps(value, sort_keys=True, indent=1)
