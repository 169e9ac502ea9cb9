"""`wwfast node|profile ...` through the installed command, on a copy of the demo conf."""
import json
import pathlib
import shutil
import subprocess
import sys

import pytest
import yaml

from wwfast.define import nodefile, nodes

WWFAST = str(pathlib.Path(sys.executable).with_name("wwfast"))


@pytest.fixture
def conf(tmp_path, project_root):
    shutil.copytree(project_root / "conf", tmp_path / "conf")
    return tmp_path / "conf"


def ww(conf, *args, ok=True):
    out = subprocess.run([WWFAST, "--conf", str(conf), "--state", str(conf.parent / "var"), *args],
                         capture_output=True, text=True, timeout=60)
    assert (out.returncode == 0) == ok, (args, out.stdout, out.stderr)
    return out


def resolved(conf):
    return nodes.resolve(nodefile.read_config(str(conf)))


def test_add_range_with_incrementing_ip_then_set_unset_delete(conf):
    out = ww(conf, "node", "add", "c[08-10]", "--ipaddr", "10.0.2.38", "--netmask", "255.255.255.0",
             "--tagadd", "rack=r1")
    assert "added 3 nodes: c[08-10]" in out.stdout
    db = resolved(conf)
    assert [db[n]["network devices"]["default"]["ipaddr"] for n in ("c08", "c09", "c10")] == \
        ["10.0.2.38", "10.0.2.39", "10.0.2.40"]
    assert db["c09"]["profiles"] == ["qemu", "default"]   # the default profile, as wwctl adds it
    assert db["c09"]["tags"] == {"platform": "qemu", "rack": "r1"}

    ww(conf, "node", "set", "c[09-10]", "--image", "other", "-H", "52:54:00:00:00:99", ok=False)  # same MAC twice
    ww(conf, "node", "set", "c09", "--image", "other", "-H", "52:54:00:00:00:99", "--kernelargs", "~quiet,nomodeset")
    n = resolved(conf)["c09"]
    assert n["image name"] == "other" and n["network devices"]["default"]["hwaddr"] == "52:54:00:00:00:99"
    assert n["kernel"]["args"] == ["console=ttyS0", "panic=-1", "nomodeset"]

    ww(conf, "node", "set", "c09", "--image", "UNDEF")      # Warewulf's clear word
    ww(conf, "node", "unset", "c09", "--hwaddr", "--tag", "rack")
    n = resolved(conf)["c09"]
    assert n["image name"] == "demo" and n["network devices"]["default"]["hwaddr"] == "" and "rack" not in n["tags"]

    ww(conf, "node", "delete", "c[08-09]")
    assert sorted(resolved(conf)) == ["c10", "n1", "n2", "n3"]
    out = ww(conf, "node", "delete", "nosuch", ok=False)
    assert "no such node: nosuch" in out.stderr


def test_bad_values_are_refused_and_the_file_is_unchanged(conf):
    before = (conf / "nodes.yaml").read_bytes()
    out = ww(conf, "node", "add", "x1", "--hwaddr", "zz", ok=False)
    assert 'hwaddr: bad MAC "zz"' in out.stderr and "unchanged" in out.stderr
    out = ww(conf, "node", "add", "x1", "-H", "52:54:00:00:00:01", ok=False)   # n1 has it
    assert "MAC 52:54:00:00:00:01 of node" in out.stderr
    out = ww(conf, "node", "set", "n1", "--profile", "nosuch", ok=False)
    assert 'profile "nosuch" does not exist' in out.stderr
    out = ww(conf, "profile", "delete", "qemu", ok=False)                      # still used by default
    assert 'profile "qemu" does not exist' in out.stderr
    out = ww(conf, "node", "add", "n1", ok=False)
    assert 'node "n1" already exists' in out.stderr
    assert (conf / "nodes.yaml").read_bytes() == before


def test_comments_and_layout_survive_edits(conf):
    ww(conf, "node", "set", "n2", "--comment", "edited")
    ww(conf, "profile", "set", "default", "--init", "/bin/init")
    text = (conf / "nodes.yaml").read_text()
    for comment in ("# wwfast node database", "# Hardware of the demo machines", "# What every node boots."):
        assert comment in text
    assert "system overlay: [wwinit, hostname" in text      # flow lists stay flow lists
    assert 'hwaddr: "52:54:00:00:00:01"' in text
    n = resolved(conf)
    assert n["n2"]["comment"] == "edited" and n["n1"]["init"] == "/bin/init"


def test_hostlist_keys_are_split_when_one_node_changes(conf):
    (conf / "nodes.yaml").write_text((conf / "nodes.yaml").read_text() + "  m[1-3]:\n    profiles: [default]\n")
    ww(conf, "node", "set", "m2", "--cluster", "blue")
    data = yaml.safe_load((conf / "nodes.yaml").read_text())
    assert {"m1", "m2", "m3"} <= set(data["nodes"]) and "m[1-3]" not in data["nodes"]
    n = resolved(conf)
    assert (n["m1"]["cluster name"], n["m2"]["cluster name"]) == ("", "blue")


def test_profile_commands(conf):
    ww(conf, "profile", "add", "gpu", "--kernelargs", "nvidia.modeset=1", "--profile", "default", "--tagadd", "gpu=a100")
    ww(conf, "node", "set", "n3", "--profile", "gpu")
    n = resolved(conf)["n3"]
    assert n["profiles"] == ["qemu", "default", "gpu"] and n["kernel"]["args"][-1] == "nvidia.modeset=1"
    out = ww(conf, "profile", "list")
    assert "gpu" in out.stdout and "PROFILE NAME" in out.stdout
    out = ww(conf, "profile", "list", "-a", "gpu")
    row = next(line for line in out.stdout.splitlines() if line.startswith("image name"))
    assert row.split()[-2:] == ["default", "demo"]
    ww(conf, "profile", "unset", "gpu", "--kernelargs")
    ww(conf, "node", "set", "n3", "--profile", "default")
    ww(conf, "profile", "delete", "gpu")
    assert "gpu" not in json.loads(ww(conf, "profile", "list", "--json").stdout)


def test_list_formats(conf):
    out = ww(conf, "node", "list")
    lines = out.stdout.splitlines()
    assert lines[0].split()[:2] == ["NODE", "NAME"] and lines[1].split()[0] == "n1"
    assert "52:54:00:00:00:02" in out.stdout and "10.0.2.22" in out.stdout
    assert "eth0" in ww(conf, "node", "list", "-n", "n1").stdout
    data = json.loads(ww(conf, "node", "list", "--json", "n[1-2]").stdout)
    assert sorted(data) == ["n1", "n2"] and data["n1"]["image name"] == "demo"
    data = yaml.safe_load(ww(conf, "node", "list", "--yaml", "n3").stdout)
    assert data["n3"]["network devices"]["default"]["ipaddr"] == "10.0.2.23"
    rows = {line.split()[0]: line.split() for line in ww(conf, "node", "list", "--all", "n1").stdout.splitlines()[2:]}
    assert rows["init"][1:] == ["default", "/sbin/init"]
    assert rows["tags.platform"][1:] == ["qemu", "qemu"]
    # `network devices.default.hwaddr` holds a space: check the whole line
    out = ww(conf, "node", "list", "--all", "n1").stdout
    assert any(l.startswith("network devices.default.hwaddr") and l.split()[-2:] == ["node", "52:54:00:00:00:01"]
               for l in out.splitlines())
    assert any(l.startswith("network devices.default.netmask") and l.split()[-2:] == ["qemu", "255.255.255.0"]
               for l in out.splitlines())


def test_global_options_from_environment(conf, tmp_path):
    import os
    env = dict(os.environ, WWFAST_CONF=str(conf), WWFAST_STATE=str(tmp_path / "var"))
    out = subprocess.run([WWFAST, "node", "list"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    assert out.returncode == 0 and "n3" in out.stdout


def test_concurrent_edits_all_land(conf):
    procs = [subprocess.Popen([WWFAST, "--conf", str(conf), "node", "add", f"p{i}",
                               "--ipaddr", f"10.0.3.{i + 1}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for i in range(6)]
    for p in procs:
        _out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
    n = resolved(conf)
    assert {f"p{i}" for i in range(6)} <= set(n)
    assert "# What every node boots." in (conf / "nodes.yaml").read_text()


def test_import_warewulf_copies_files_unchanged(tmp_path):
    from test_define import WAREWULF_NODES_CONF
    from test_settings import WAREWULF_CONF
    src = tmp_path / "etc-warewulf"
    src.mkdir()
    (src / "nodes.conf").write_text(WAREWULF_NODES_CONF)
    (src / "warewulf.conf").write_text(WAREWULF_CONF)
    conf = tmp_path / "conf"
    ww(conf, "import-warewulf", str(src))
    assert (conf / "nodes.yaml").read_text() == WAREWULF_NODES_CONF
    assert (conf / "wwfast.yaml").read_text() == WAREWULF_CONF
    ww(conf, "import-warewulf", str(src), ok=False)          # no silent overwrite
    assert "node1" in ww(conf, "node", "list").stdout
    # and in place, without importing:
    assert "node2" in ww(src, "node", "list").stdout
