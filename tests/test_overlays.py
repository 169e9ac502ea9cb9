"""Overlays: golden renders of every built-in overlay for the fixture nodes, template errors that say
where, Warewulf's template functions, site shadowing, incremental rebuilds, archives read by GNU cpio
and bsdtar, and `wwfast overlay list/show`.

Regenerate the goldens after an intended change: WWFAST_UPDATE_GOLDEN=1 pytest tests/test_overlays.py
"""
import importlib
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

from helpers.newc import split_archives
from helpers.overlay_fixtures import (RUNTIME, SYSTEM, edit_node, fake_ssh_keys, fixture_nodes, fixture_settings,
                                      listing, make_images, make_node, netdev, set_image_fingerprint)
from wwfast.builder import overlay_build, overlays
from wwfast.builder.overlay_build import OverlayBuilder, archive_path, build_overlays
from wwfast.builder.render import RenderError

GOLDEN = pathlib.Path(__file__).parent / "golden" / "overlays"
UPDATE = os.environ.get("WWFAST_UPDATE_GOLDEN") == "1"
TWINS = ["wwfast._cpio", "wwfast._cpio_py"]


@pytest.fixture(params=TWINS)
def twin(request, monkeypatch):
    module = importlib.import_module(request.param)
    monkeypatch.setattr(overlay_build.cpio, "NewcWriter", module.NewcWriter)
    return module


@pytest.fixture
def dirs(tmp_path):
    conf, state = tmp_path / "conf", tmp_path / "state"
    conf.mkdir()
    make_images(state)
    fake_ssh_keys(state)
    return conf, state


MEMORY = {}   # per state dir: what the build stage's stamp keeps between runs


def build(dirs, nodes=None, **kw):
    conf, state = dirs
    return build_overlays(conf, state, kw.pop("settings", fixture_settings()), nodes or fixture_nodes(),
                          memory=MEMORY.setdefault(str(state), {}), **kw)


def read(state, node, context):
    """The node's archive as the node gets it: in secure mode the system one is its shared part, then its own."""
    own = pathlib.Path(archive_path(state, node, context)).read_bytes()
    record = MEMORY.get(str(state), {}).get("nodes", {}).get(node, {})
    if context != "system" or not record.get("system_shared"):
        return own
    return (pathlib.Path(state) / "build" / record["system_shared"]).read_bytes() + own


def test_golden_every_builtin_overlay(twin, dirs):
    """Each fixture node's system and runtime archive, entry by entry, equals its checked-in golden."""
    conf, state = dirs
    result = build(dirs, workers=1)
    assert sorted(result.rebuilt) == sorted(fixture_nodes())
    mismatches = []
    for node in fixture_nodes():
        for context in overlay_build.CONTEXTS:
            text = listing(read(state, node, context))
            golden = GOLDEN / f"{node}.{context}.txt"
            if UPDATE:
                golden.write_text(text)
            elif not golden.exists() or golden.read_text() != text:
                mismatches.append(golden.name)
    assert not mismatches, f"differs from golden (WWFAST_UPDATE_GOLDEN=1 to accept): {mismatches}"


def test_goldens_cover_every_builtin_overlay_and_template():
    from test_ww_overlays import WARENAME_OVERLAYS  # Warewulf's names: goldens in tests/golden/warewulf
    builtin = {p.name for p in overlays.BUILTIN_DIR.iterdir() if p.is_dir()} - set(WARENAME_OVERLAYS)
    used = set(SYSTEM) | set(RUNTIME)
    assert builtin <= used, f"built-in overlays without a golden: {builtin - used}"
    text = "".join(p.read_text() for p in GOLDEN.glob("*.txt"))
    for marker in ("/etc/systemd/network/20-wwfast-default.network", "/etc/NetworkManager/system-connections/"
                   "wwfast-vlan100.nmconnection", "/etc/network/interfaces.d/wwfast-default", "/etc/resolv.conf",
                   "/etc/passwd", "/etc/group", "/root/.ssh/authorized_keys", "/etc/fstab", "/etc/issue",
                   "/etc/ssh/ssh_host_rsa_key", "/wwinit/config", "/init", "/etc/hostname", "/etc/hosts",
                   "/etc/systemd/network/10-wwfast-vlan100.netdev", "/etc/systemd/system/wwfast-agent.service"):
        assert marker in text, marker


def test_twins_write_identical_archives(dirs, monkeypatch):
    conf, state = dirs
    blobs = []
    for name in TWINS:
        monkeypatch.setattr(overlay_build.cpio, "NewcWriter", importlib.import_module(name).NewcWriter)
        build(dirs, force=True, workers=1)
        blobs.append([read(state, n, c) for n in sorted(fixture_nodes()) for c in overlay_build.CONTEXTS])
    assert blobs[0] == blobs[1]


def test_network_config_follows_the_image_tools(dirs):
    """busybox image: ifupdown only; systemd image: networkd, NetworkManager (0600) and ifupdown."""
    conf, state = dirs
    build(dirs)
    busybox = listing(read(state, "n-static", "system"))
    assert "/etc/network/interfaces.d/wwfast-default" in busybox
    assert "0:0 /etc/systemd" not in busybox and "0:0 /etc/NetworkManager" not in busybox  # no empty dirs either
    systemd = listing(read(state, "n-twonics", "system"))
    assert "=== f 0600 0:0 /etc/NetworkManager/system-connections/wwfast-data.nmconnection" in systemd
    assert "Address=10.10.0.16/16\n" in systemd and "MTUBytes=9000" in systemd
    assert "Address=fd00::16/64" in systemd
    nonet = listing(read(state, "n-nonet", "system"))
    assert "WWIFACE=''" in nonet and "/etc/network/interfaces.d/" not in nonet


def test_archives_extract_with_gnu_cpio_and_bsdtar(dirs, tmp_path):
    """What the kernel would see (system then runtime, concatenated) unpacks with the real tools."""
    conf, state = dirs
    build(dirs)
    both = read(state, "n-vlan", "system") + read(state, "n-vlan", "runtime")
    for tool, cmd in (("cpio", ["cpio", "-idm", "--quiet"]), ("bsdtar", ["bsdtar", "-xpf", "-"])):
        root = tmp_path / tool
        root.mkdir()
        for part in (read(state, "n-vlan", "system"), read(state, "n-vlan", "runtime")):
            subprocess.run(cmd, input=part, cwd=root, check=True)
        assert (root / "etc/hostname").read_text() == "n-vlan\n"
        assert oct((root / "etc/ssh/ssh_host_ed25519_key").stat().st_mode & 0o7777) == "0o600"
        assert oct((root / "root/.ssh").stat().st_mode & 0o7777) == "0o700"
        assert oct((root / "init").stat().st_mode & 0o7777) == "0o755"
        assert "WWIFTYPE=vlan" in (root / "wwinit/config").read_text()
        assert "alice:x:1000" in (root / "etc/passwd").read_text()
    assert len(both) % 512 == 0


def _unpack(tmp, parts):
    tmp.mkdir()
    for part in (archive for blob in parts for archive in split_archives(blob)):   # GNU cpio stops at a trailer
        subprocess.run(["cpio", "-idmu", "--quiet"], input=part, cwd=tmp, check=True)
    out = {}
    for path in sorted(tmp.rglob("*")):
        st = path.lstat()
        rel = str(path.relative_to(tmp))
        out[rel] = (st.st_mode, st.st_uid, os.readlink(path) if path.is_symlink() else
                    None if path.is_dir() else path.read_bytes())
    return out


def test_system_archive_leaves_out_what_runtime_sends(dirs, tmp_path):
    """Outside secure mode /etc/hosts (all nodes) travels once, in the runtime archive; the node's tree
    (system then runtime, as the kernel unpacks them) is exactly the secure mode one, where the system
    archive keeps everything because the runtime overlay only comes later."""
    conf, state = dirs
    build(dirs)
    plain = {n: (read(state, n, "system"), read(state, n, "runtime")) for n in fixture_nodes()}
    build(dirs, settings=fixture_settings(secure=True))
    secure = {n: (read(state, n, "system"), read(state, n, "runtime")) for n in fixture_nodes()}
    for node in fixture_nodes():
        assert "0:0 /etc/hosts" not in listing(plain[node][0])
        assert "0:0 /etc/hosts" in listing(secure[node][0]) and "0:0 /etc/hosts" in listing(plain[node][1])
        a = _unpack(tmp_path / f"{node}-plain", plain[node])
        b = _unpack(tmp_path / f"{node}-secure", secure[node])
        assert a.pop("wwinit/config") != b.pop("wwinit/config")  # WWSECURE differs, nothing else
        assert a == b


def test_runtime_archive_identical_nodes_share_one_file(dirs):
    conf, state = dirs
    nodes = {f"c{i}": make_node(f"c{i}", **{"network devices": {"default": netdev(
        device="eth0", hwaddr=f"52:54:00:00:10:{i:02x}", ipaddr=f"10.0.3.{i}", netmask="255.255.255.0")}})
        for i in range(1, 6)}
    build(dirs, nodes=nodes, workers=1)
    inodes = {os.stat(archive_path(state, n, "runtime")).st_ino for n in nodes}
    assert len(inodes) == 1
    assert len({read(state, n, "system") for n in nodes}) == 5


def test_incremental_rebuilds_only_what_changed(dirs):
    conf, state = dirs
    nodes = fixture_nodes()
    first = build(dirs, nodes=nodes)
    assert len(first.rebuilt) == 4
    again = build(dirs, nodes=nodes)
    assert again.rebuilt == [] and len(again.current) == 4
    before = os.stat(archive_path(state, "n-static", "system")).st_mtime_ns

    nodes["n-twonics"] = edit_node(nodes["n-twonics"], lambda doc: doc["tags"].update(rack="r9"))  # no other node shows it
    tag = build(dirs, nodes=nodes)
    assert tag.rebuilt == ["n-twonics"] and tag.reasons["n-twonics"] == "system/runtime inputs changed"
    assert os.stat(archive_path(state, "n-static", "system")).st_mtime_ns == before

    nodes["n-twonics"] = edit_node(nodes["n-twonics"],  # every /etc/hosts changes
                                   lambda doc: doc["network devices"]["default"].update(ipaddr="10.0.2.99"))
    addr = build(dirs, nodes=nodes)
    assert sorted(addr.rebuilt) == sorted(nodes)
    assert "10.0.2.99 n-twonics" in listing(read(state, "n-static", "runtime"))

    set_image_fingerprint(state, "systemd", "v2")  # users reads the image's /etc/passwd, network its tools
    img = build(dirs, nodes=nodes)
    assert sorted(img.rebuilt) == ["n-twonics", "n-vlan"]
    assert all(img.reasons[n] == "system/runtime inputs changed" for n in img.rebuilt)

    site = conf / "overlays" / "issue" / "etc"
    site.mkdir(parents=True)
    (site / "issue").write_text("site issue\n")  # a site overlay shadows the built-in one
    shadow = build(dirs, nodes=nodes)
    assert sorted(shadow.rebuilt) == sorted(nodes)
    assert "=== f 0644 0:0 /etc/issue\nsite issue\n" in listing(read(state, "n-nonet", "system"))

    (pathlib.Path(state) / "ssh" / "ssh_host_rsa_key.pub").write_text("ssh-rsa CHANGED\n")  # an included file
    keys = build(dirs, nodes=nodes)
    assert sorted(keys.rebuilt) == sorted(nodes) and "ssh-rsa CHANGED" in listing(read(state, "n-vlan", "system"))

    os.unlink(archive_path(state, "n-vlan", "runtime"))
    gone = build(dirs, nodes=nodes)
    assert gone.rebuilt == ["n-vlan"] and gone.reasons["n-vlan"] == "no archive yet"

    del nodes["n-nonet"]
    removed = build(dirs, nodes=nodes)
    assert removed.removed == ["n-nonet"] and not os.path.exists(os.path.dirname(archive_path(state, "n-nonet", "system")))


def test_parallel_build_matches_serial(dirs, monkeypatch):
    conf, state = dirs
    nodes = {f"p{i:03d}": make_node(f"p{i:03d}", **{"network devices": {"default": netdev(
        device="eth0", hwaddr=f"52:54:00:01:00:{i:02x}", ipaddr=f"10.0.4.{i}", netmask="255.255.255.0")}})
        for i in range(40)}
    build(dirs, nodes=nodes, workers=1)
    serial = {n: read(state, n, "system") for n in nodes}
    monkeypatch.setattr(overlay_build, "PARALLEL_MIN_NODES", 2)
    build(dirs, nodes=nodes, workers=2, force=True)
    assert {n: read(state, n, "system") for n in nodes} == serial


def _site_overlay(conf, name, files):
    for rel, text in files.items():
        path = conf / "overlays" / name / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def _node_with(system):
    return {"t1": make_node("t1", **{"system overlay": system, "runtime overlay": [],
                                     "network devices": {"default": netdev(device="eth0", hwaddr="52:54:00:00:00:09",
                                                                           ipaddr="10.0.2.9", netmask="255.255.255.0")}})}


def test_undefined_name_error_names_template_line_and_node(dirs):
    conf, state = dirs
    _site_overlay(conf, "typo", {"etc/motd.j2": "hello\n{% if true %}\n{{ node.hostnmae }}\n{% endif %}\n"})
    with pytest.raises(RenderError) as e:
        build(dirs, nodes=_node_with(["typo"]))
    text = str(e.value)
    assert f"{conf}/overlays/typo/etc/motd.j2:3: node t1: undefined:" in text and "hostnmae" in text


def test_syntax_error_and_function_errors_say_where(dirs):
    conf, state = dirs
    _site_overlay(conf, "bad", {"etc/a.j2": "ok\n{% for x in %}\n"})
    with pytest.raises(RenderError) as e:
        build(dirs, nodes=_node_with(["bad"]))
    assert f"{conf}/overlays/bad/etc/a.j2:2: template syntax" in str(e.value)
    shutil.rmtree(conf / "overlays" / "bad")
    _site_overlay(conf, "inc", {"etc/b.j2": "{{ node.id }}\n\n{{ include('/nonexistent/file') }}\n"})
    with pytest.raises(RenderError) as e:
        build(dirs, nodes=_node_with(["inc"]))
    assert f"{conf}/overlays/inc/etc/b.j2:3: node t1: include: cannot read /nonexistent/file" in str(e.value)


def test_missing_overlay_names_the_node(dirs):
    with pytest.raises(overlays.OverlayError) as e:
        build(dirs, nodes=_node_with(["wwinit", "no-such-overlay"]))
    assert "node t1: system overlay" in str(e.value) and "'no-such-overlay' not found" in str(e.value)


def test_warewulf_template_functions(dirs, tmp_path):
    conf, state = dirs
    (conf / "passwd").write_text("bob:x:2000:2000::/home/bob:/bin/sh\nroot:x:0:0:dup:/:/bin/false\n")
    _site_overlay(conf, "funcs", {
        "etc/multi.j2": "dropped\n{{ file('one.conf') }}first {{ node.id }}\n"
                        "{{ file('/opt/two.conf', mode=0o640, uid=5, gid=6) }}second\n"
                        "{{ file('link') }}{{ softlink('/etc/one.conf') }}",
        "etc/never.j2": "{% if node.tags.get('x') is none %}{{ abort() }}{% endif %}never\n",
        "etc/passwd.j2": "{{ [include_from_image('/etc/passwd'), include('passwd')] | join('\\n') "
                         "| unique_field(':', 0) }}\n",
        "etc/first-line.j2": "{{ include_block('passwd', 'MARK') }}\n",
        "etc/image-has.j2": "{{ image_has('/sbin/ifup') }} {{ image_has('/usr/bin/nothing') }}\n",
        "etc/localtime.j2": "{{ softlink('/usr/share/zoneinfo/UTC') }}",
        "etc/static.txt": "copied as is {{ not rendered }}\n",
        "etc/peers.j2": "{% for n in all_nodes if n.id != node.id %}{{ n.id }} {% endfor %}{{ node.id }}\n",
    })
    os.chmod(conf / "overlays/funcs/etc/static.txt", 0o751)
    build(dirs, nodes=_node_with(["funcs"]))
    text = listing(read(state, "t1", "system"))
    assert "=== f 0644 0:0 /etc/one.conf\nfirst t1\n" in text
    assert "=== f 0640 5:6 /opt/two.conf\nsecond\n" in text
    assert "=== l 0777 0:0 /etc/link -> /etc/one.conf" in text
    assert "/etc/multi" not in text and "dropped" not in text
    assert "/etc/never" not in text
    assert ("/etc/passwd\nroot:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000:from image:/home/alice:/bin/sh\n"
            "bob:x:2000:2000::/home/bob:/bin/sh\n") in text
    assert "/etc/first-line\nbob:x:2000:2000::/home/bob:/bin/sh\nroot:x:0:0:dup:/:/bin/false\nMARK\n" in text
    assert "/etc/image-has\nTrue False\n" in text
    assert "=== l 0777 0:0 /etc/localtime -> /usr/share/zoneinfo/UTC" in text
    assert "=== f 0751 0:0 /etc/static.txt\ncopied as is {{ not rendered }}\n" in text
    assert "=== f 0644 0:0 /etc/peers\nt1\n" in text


def test_file_cannot_escape_the_node_tree(dirs):
    conf, state = dirs
    _site_overlay(conf, "escape", {"etc/x.j2": "{{ file('../../../../tmp/evil') }}x\n"})
    build(dirs, nodes=_node_with(["escape"]))
    assert "=== f 0644 0:0 /tmp/evil" in listing(read(state, "t1", "system"))  # anchored at the node's root


def test_real_ssh_keys_generated_once(tmp_path):
    conf, state = tmp_path / "conf", tmp_path / "state"
    conf.mkdir()
    make_images(state)
    nodes = {"k1": make_node("k1")}
    build((conf, state), nodes=nodes)
    key = state / "ssh" / "ssh_host_ed25519_key"
    fingerprint = subprocess.run(["ssh-keygen", "-l", "-f", str(key) + ".pub"], capture_output=True, text=True,
                                 check=True).stdout
    assert "ED25519" in fingerprint
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    content = key.read_bytes()
    build((conf, state), nodes=nodes, force=True)
    assert key.read_bytes() == content
    assert content.decode() in listing(read(state, "k1", "system"))


def test_relative_state_dir_still_finds_the_ssh_keys(tmp_path, monkeypatch):
    """`--state var` from the project directory (as make runs it): the key templates read STATE/ssh,
    not a path relative to the conf directory."""
    make_images(tmp_path / "state")
    fake_ssh_keys(tmp_path / "state")
    (tmp_path / "conf").mkdir()
    monkeypatch.chdir(tmp_path)
    build((pathlib.Path("conf"), pathlib.Path("state")), nodes={"k1": make_node("k1")})
    key = (tmp_path / "state" / "ssh" / "ssh_host_ed25519_key").read_text()
    assert key and key in listing(read(tmp_path / "state", "k1", "system"))


def _wwfast(args, conf, state):
    env = dict(os.environ, WWFAST_CONF=str(conf), WWFAST_STATE=str(state))
    return subprocess.run([sys.executable, "-m", "wwfast.cli"] + args, capture_output=True, text=True, env=env)


def test_overlay_list_and_show_cli(dirs):
    conf, state = dirs
    (conf / "wwfast.yaml").write_text("ipaddr: 10.0.2.2\nwarewulf:\n  port: 9873\n  secure: false\n")
    (state / "define").mkdir(parents=True)
    import json
    (state / "define" / "nodes.json").write_text(json.dumps(
        {"format": 1, "nodes": {n: v.to_json() for n, v in fixture_nodes().items()}}))
    _site_overlay(conf, "hostname", {"etc/hostname.j2": "site-{{ node.id }}\n"})
    out = _wwfast(["overlay", "list", "--all"], conf, state)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert any(line.split()[:2] == ["hostname", "site"] for line in lines)
    assert any(line.split()[:2] == ["wwinit", "built-in"] for line in lines)
    assert any(line.strip() == "/wwinit/config (template)" for line in lines)
    raw = _wwfast(["overlay", "show", "hosts", "etc/hosts.j2"], conf, state)
    assert raw.returncode == 0 and "{% for n in all_nodes %}" in raw.stdout
    shown = _wwfast(["overlay", "show", "hostname", "/etc/hostname", "--render", "n-vlan"], conf, state)
    assert shown.returncode == 0 and shown.stdout == "site-n-vlan\n", shown.stderr
    cfg = _wwfast(["overlay", "show", "wwinit", "wwinit/config.j2", "--render", "n-static"], conf, state)
    assert "WWIPADDR=10.0.2.15\n" in cfg.stdout and "WWPREFIX=24\n" in cfg.stdout
    bad = _wwfast(["overlay", "show", "hosts", "etc/nope", "--render", "n-vlan"], conf, state)
    assert bad.returncode == 1 and "has no file 'etc/nope'" in bad.stderr
    nonode = _wwfast(["overlay", "show", "hostname", "etc/hostname", "--render", "zz"], conf, state)
    assert nonode.returncode == 1 and "no node 'zz'" in nonode.stderr
    built = _wwfast(["overlay", "build"], conf, state)
    assert built.returncode == 0 and "overlays: 4 node(s) rebuilt, 0 current" in built.stdout, built.stderr
    again = _wwfast(["overlay", "build"], conf, state)
    assert "overlays: 0 node(s) rebuilt, 4 current" in again.stdout
    assert (state / "build" / "overlays" / "n-vlan" / "system.cpio").is_file()


@pytest.mark.parametrize("ip,mask", [("10.0.2.15", "255.255.255.0"), ("10.1.2.3", "16"), ("192.168.100.3", "255.255.255.128"),
                                     ("172.16.0.1", "255.240.0.0"), ("1.2.3.4", "")])
def test_cidr_helpers_agree_with_ipaddress(ip, mask):
    import ipaddress
    from wwfast.builder.template_views import netdev_view
    from wwfast.records import NetDev
    dev = netdev_view(NetDev.from_json("d", netdev(ipaddr=ip, netmask=mask)))
    iface = ipaddress.IPv4Interface(f"{ip}/{mask or 32}")
    assert (dev.prefixlen, dev.network, dev.cidr, dev.network_cidr, dev.broadcast) == (
        iface.network.prefixlen, str(iface.network.network_address), f"{ip}/{iface.network.prefixlen}",
        str(iface.network), str(iface.network.broadcast_address))
