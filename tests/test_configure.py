"""`wwfast configure dhcp|hosts|tftp|--all`: what is written, checked by the real dnsmasq and dhcpd parsers,
written only when it changes, the admin's lines kept, restarts through systemctl, settings checked."""
import os
import pathlib
import subprocess

import pytest

from stages import define as define_stage
from wwfast import cli
from wwfast.configure import hostsfile, plan
from wwfast.define import settings
from wwfast.errors import ConfigError

SETTINGS = """\
ipaddr: 192.168.77.1
netmask: 255.255.255.0
warewulf:
  port: 9873
dhcp:
  enabled: true
  range start: 192.168.77.100
  range end: 192.168.77.150
{extra}"""

NODES = """\
nodeprofiles:
  default:
    primary network: default
    network devices:
      default: {device: eth0, netmask: 255.255.255.0}
nodes:
  n1:
    profiles: [default]
    network devices:
      default: {hwaddr: "52:54:00:00:01:01", ipaddr: 192.168.77.11}
      ib: {device: ib0, type: infiniband, ipaddr: 10.10.0.11,
           hwaddr: "80:00:02:08:fe:80:00:00:00:00:00:00:00:02:c9:03:00:a1:b2:c3"}
  n2:
    profiles: [default]
    network devices:
      default: {hwaddr: "52:54:00:00:01:02", ipaddr: 192.168.77.12}
      data: {device: eth1, hwaddr: "52:54:00:00:02:02"}
    ipmi: {ipaddr: 192.168.78.12}
  n_3:
    profiles: [default]
    network devices:
      default: {hwaddr: "52:54:00:00:01:03"}
"""


@pytest.fixture
def site(tmp_path):
    conf, state = tmp_path / "conf", tmp_path / "state"
    conf.mkdir()
    (conf / "wwfast.yaml").write_text(SETTINGS.format(extra=""))
    (conf / "nodes.yaml").write_text(NODES)
    return conf, state


def wwfast(conf, state, *args):
    """Run `wwfast` in process; returns exit code (output through capsys)."""
    return cli.main(["--conf", str(conf), "--state", str(state), *args])


def run_dhcp(capsys, site, out, *extra):
    conf, state = site
    rc = wwfast(conf, state, "configure", "dhcp", "--output", str(out), *extra)
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def test_dnsmasq_configuration_is_what_dnsmasq_accepts(site, tmp_path, capsys):
    out = tmp_path / "etc" / "wwfast.conf"
    rc, stdout, stderr = run_dhcp(capsys, site, out)
    assert rc == 0, stderr
    text = out.read_text()
    lines = text.splitlines()
    assert "listen-address=192.168.77.1" in lines
    assert "dhcp-range=set:wwfast,192.168.77.100,192.168.77.150,255.255.255.0,1h" in lines
    assert "dhcp-range=set:wwfast,192.168.77.0,static,255.255.255.0,1h" in lines
    assert "dhcp-host=52:54:00:00:01:01,set:wwfast-node,192.168.77.11,n1" in lines
    assert "dhcp-host=52:54:00:00:01:02,set:wwfast-node,192.168.77.12,n2" in lines
    assert "dhcp-host=52:54:00:00:02:02,set:wwfast-node,n2-data" in lines   # no address: from the range
    assert "dhcp-host=52:54:00:00:01:03,set:wwfast-node" in lines           # n_3 is no host name
    assert not any("80:00:02:08" in line for line in lines)                          # InfiniBand GUID skipped
    assert "dhcp-boot=tag:!wwfast-ipxe,tag:wwfast-arch-0,undionly.kpxe,,192.168.77.1" in lines
    assert "dhcp-boot=tag:!wwfast-ipxe,tag:wwfast-arch-7,snponly.efi,,192.168.77.1" in lines
    assert "dhcp-boot=tag:!wwfast-ipxe,tag:wwfast-arch-11,arm64-efi/snponly.efi,,192.168.77.1" in lines
    assert ("dhcp-boot=tag:wwfast-ipxe,http://192.168.77.1:9873/ipxe/${mac:hexhyp}"
            "?assetkey=${asset:uristring}&uuid=${uuid}") in lines
    assert "InfiniBand" in stderr and "n1 ib" in stderr and "n_3" in stderr
    assert f"{out} created" in stdout
    check = subprocess.run(["dnsmasq", "--test", f"--conf-file={out}"], capture_output=True, text=True)
    assert check.returncode == 0 and "syntax check OK" in check.stderr, check.stderr


def test_dhcpd_configuration_is_what_dhcpd_accepts(site, tmp_path, capsys):
    conf, _ = site
    (conf / "wwfast.yaml").write_text(SETTINGS.format(extra="  template: dhcpd\n"))
    out = tmp_path / "dhcpd.conf"
    rc, stdout, stderr = run_dhcp(capsys, site, out)
    assert rc == 0, stderr
    text = out.read_text()
    assert "host n1-default {\n    hardware ethernet 52:54:00:00:01:01;\n    fixed-address 192.168.77.11;\n" \
           '    option host-name "n1";\n}' in text
    assert "host n-3-default {" in text and "range 192.168.77.100 192.168.77.150;" in text
    assert '} elsif option architecture-type = 00:07 {\n    # x86-64 UEFI\n    filename "snponly.efi";' in text
    assert "dhcp (dhcpd, 4 hosts)" in stdout and "restart isc-dhcp-server" in stdout
    check = subprocess.run(["dhcpd", "-t", "-cf", str(out)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr


@pytest.mark.parametrize("extra, server", [
    ("  template: default\n  systemd name: dhcpd\n", "dhcpd"),      # an unmodified EL warewulf.conf
    ("  template: static\n  systemd name: dnsmasq\n", "dnsmasq"),   # Warewulf's EL10 / SUSE files
    ("", "dnsmasq"),
])
def test_warewulf_template_values_follow_the_systemd_name(site, tmp_path, capsys, extra, server):
    conf, _ = site
    (conf / "wwfast.yaml").write_text(SETTINGS.format(extra=extra))
    rc, stdout, _ = run_dhcp(capsys, site, tmp_path / "out.conf")
    assert rc == 0 and f"dhcp ({server}," in stdout


def test_unchanged_cluster_rewrites_nothing_and_a_new_mac_arrives_in_one_run(site, tmp_path, capsys):
    conf, _ = site
    out = tmp_path / "wwfast.conf"
    assert run_dhcp(capsys, site, out)[0] == 0
    before = os.stat(out)
    rc, stdout, _ = run_dhcp(capsys, site, out)
    after = os.stat(out)
    assert rc == 0 and "unchanged; nothing written" in stdout
    assert (before.st_ino, before.st_mtime_ns) == (after.st_ino, after.st_mtime_ns)
    # a changed node: n1 got a new NIC
    (conf / "nodes.yaml").write_text(NODES.replace("52:54:00:00:01:01", "52:54:00:00:09:01"))
    rc, stdout, _ = run_dhcp(capsys, site, out)
    assert rc == 0 and "updated (+1 -1 lines)" in stdout
    assert "  +dhcp-host=52:54:00:00:09:01,set:wwfast-node,192.168.77.11,n1" in stdout.splitlines()
    assert "  -dhcp-host=52:54:00:00:01:01,set:wwfast-node,192.168.77.11,n1" in stdout.splitlines()
    assert "52:54:00:00:09:01" in out.read_text() and "52:54:00:00:01:01" not in out.read_text()


def test_show_prints_and_writes_nothing(site, tmp_path, capsys):
    out = tmp_path / "wwfast.conf"
    rc, stdout, _ = run_dhcp(capsys, site, out, "--show")
    assert rc == 0 and "dhcp-host=52:54:00:00:01:01" in stdout and not out.exists()
    conf, state = site
    assert wwfast(conf, state, "configure", "--show", "hosts", "--output", str(tmp_path / "hosts")) == 0
    assert "192.168.77.11" in capsys.readouterr().out and not (tmp_path / "hosts").exists()


def test_site_template_in_conf_overrides_the_built_in_one(site, tmp_path, capsys):
    conf, _ = site
    (conf / "dhcp").mkdir()
    (conf / "dhcp" / "dnsmasq.conf.j2").write_text(
        "# site\n{% for h in hosts %}dhcp-host={{ h.mac }},{{ h.ipaddr or 'dyn' }}\n{% endfor %}")
    out = tmp_path / "out.conf"
    assert run_dhcp(capsys, site, out)[0] == 0
    assert out.read_text().splitlines()[:2] == ["# site", "dhcp-host=52:54:00:00:01:01,192.168.77.11"]
    (conf / "dhcp" / "dnsmasq.conf.j2").write_text("{% for h in hosts %}\n")
    rc, _, stderr = run_dhcp(capsys, site, out)
    assert rc == 1 and "conf/dhcp/dnsmasq.conf.j2" in stderr and "template syntax" in stderr


@pytest.fixture
def fake_systemctl(tmp_path, monkeypatch):
    """A `systemctl` first in PATH that records its arguments (and fails for units named fail-*)."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "systemctl.log"
    script = bindir / "systemctl"
    script.write_text(f'#!/bin/sh\necho "$@" >> {log}\ncase "$2" in fail-*) echo "Unit $2 not found." >&2; '
                      f'exit 5;; esac\n')
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    return log


def test_restart_goes_through_systemd_only_when_the_file_changed(site, tmp_path, capsys, fake_systemctl):
    conf, _ = site
    out = tmp_path / "wwfast.conf"
    # --show says which command a restart would run, and runs nothing
    rc, _, stderr = run_dhcp(capsys, site, out, "--show", "--restart")
    assert rc == 0 and "would run `systemctl restart dnsmasq`" in stderr and not fake_systemctl.exists()
    rc, stdout, _ = run_dhcp(capsys, site, out, "--restart")
    assert rc == 0 and "restarted dnsmasq" in stdout
    rc, _, stderr = run_dhcp(capsys, site, out, "--show", "--restart")
    assert "would not change; no restart" in stderr
    rc, stdout, _ = run_dhcp(capsys, site, out, "--restart")
    assert rc == 0 and "dnsmasq not restarted" in stdout
    assert fake_systemctl.read_text().splitlines() == ["restart dnsmasq"]
    # the settings key does the same, with the unit the settings name; a failed restart is exit 1
    (conf / "wwfast.yaml").write_text(SETTINGS.format(extra="  restart: true\n  systemd name: fail-dhcp\n"))
    (conf / "nodes.yaml").write_text(NODES.replace("192.168.77.12", "192.168.77.22"))
    rc, stdout, stderr = run_dhcp(capsys, site, out)
    assert rc == 1 and "systemctl restart fail-dhcp failed (exit 5): Unit fail-dhcp not found." in stderr
    assert fake_systemctl.read_text().splitlines()[-1] == "restart fail-dhcp"


def test_disabled_dhcp_writes_nothing(site, tmp_path, capsys):
    conf, state = site
    (conf / "wwfast.yaml").write_text(SETTINGS.format(extra="").replace("enabled: true", "enabled: false"))
    rc, _, stderr = run_dhcp(capsys, site, tmp_path / "x.conf")
    assert rc == 0 and "disabled" in stderr and not (tmp_path / "x.conf").exists()


@pytest.mark.parametrize("extra, expected", [
    ("  template: dnsmasqq\n", 'wwfast.yaml:9: dhcp.template: unknown DHCP template "dnsmasqq": one of dnsmasq, '
                               'dhcpd, default, static (did you mean "dnsmasq"?)'),
    ("  tempalte: dhcpd\n", 'wwfast.yaml:9: dhcp.tempalte: unknown key "tempalte" (did you mean "template"?)'),
    ("  restart: maybe\n", 'wwfast.yaml:9: dhcp.restart: "maybe" is not a boolean'),
    ("tftp:\n  ipxe:\n    '00:07': snponly.efi\n    'zz': x.efi\n",
     'wwfast.yaml:12: tftp.ipxe.zz: bad client architecture "zz": use two hex octets such as 00:07'),
    ("tftp:\n  ipxe:\n    '00:07': ../../etc/shadow\n", 'wwfast.yaml:11: tftp.ipxe.00:07: bad boot file'),
    ("tftp:\n  ipxe:\n    7: a.efi\n    '00:07': b.efi\n", "wwfast.yaml:12: tftp.ipxe.00:07: architecture 00:07 is given twice"),
])
def test_bad_dhcp_settings_name_file_line_field(tmp_path, extra, expected):
    (tmp_path / "wwfast.yaml").write_text(SETTINGS.format(extra=extra))
    with pytest.raises(ConfigError) as info:
        settings.load(str(tmp_path))
    assert expected in str(info.value)


@pytest.mark.parametrize("start, end, expected", [
    ("192.168.77.100", "", "wwfast.yaml:7: dhcp.range start: a DHCP range needs both ends: range end is not set"),
    ("192.168.77.200", "192.168.77.100", "wwfast.yaml:8: dhcp.range end: range end 192.168.77.100 is below range start"),
    ("192.168.77.1000", "192.168.77.100", 'wwfast.yaml:7: dhcp.range start: bad IPv4 address "192.168.77.1000"'),
])
def test_bad_dhcp_range_names_the_field(tmp_path, start, end, expected):
    text = SETTINGS.format(extra="").replace("192.168.77.100", start).replace("192.168.77.150", end)
    (tmp_path / "wwfast.yaml").write_text(text.replace("range end: \n", "range end:\n"))
    with pytest.raises(ConfigError) as info:
        settings.load(str(tmp_path))
    assert expected in str(info.value)


def test_arch_keys_as_warewulf_writes_them_or_as_numbers(tmp_path):
    (tmp_path / "wwfast.yaml").write_text("tftp:\n  ipxe:\n    00:00: undionly.kpxe\n    7: ipxe.efi\n"
                                          "    0x0b: /opt/ipxe/arm64.efi\n")
    s = settings.load(str(tmp_path))
    assert s.ipxe_binaries == {"00:00": "undionly.kpxe", "00:07": "ipxe.efi", "00:0B": "/opt/ipxe/arm64.efi"}
    assert [(b.arch, b.file) for b in plan.boot_files(s)] == [(0, "undionly.kpxe"), (7, "ipxe.efi"), (11, "arm64.efi")]


def test_define_stage_warns_about_the_range_and_reruns_when_it_changes(site, capsys):
    conf, state = site
    assert define_stage.run(str(conf), str(state)) == 0
    assert "warning" not in capsys.readouterr().out
    # the range now holds n1's and n2's static addresses
    (conf / "wwfast.yaml").write_text(SETTINGS.format(extra="").replace("192.168.77.100", "192.168.77.10"))
    assert define_stage.run(str(conf), str(state)) == 0
    out = capsys.readouterr().out
    assert "define: running (settings changed: dhcp range" in out and "'192.168.77.10', '192.168.77.150']" in out
    assert ("dhcp range 192.168.77.10-192.168.77.150 holds 2 node static address(es): n1 default 192.168.77.11, "
            "n2 default 192.168.77.12") in out
    # outside the server's network
    (conf / "wwfast.yaml").write_text(SETTINGS.format(extra="").replace("range start: 192.168.77.100",
                                                                       "range start: 192.168.76.100"))
    assert define_stage.run(str(conf), str(state)) == 0
    assert "is outside the server's network 192.168.77.0/24 (192.168.76.100)" in capsys.readouterr().out
    assert define_stage.run(str(conf), str(state)) == 0
    assert "define: current" in capsys.readouterr().out


def test_configure_dhcp_prints_the_range_warning_too(site, tmp_path, capsys):
    conf, _ = site
    (conf / "wwfast.yaml").write_text(SETTINGS.format(extra="").replace("range start: 192.168.77.100",
                                                                       "range start: 192.168.77.1"))
    rc, _, stderr = run_dhcp(capsys, site, tmp_path / "x.conf")
    assert rc == 0 and "holds the network, broadcast or server address" in stderr


ADMIN_HOSTS = """\
127.0.0.1\tlocalhost
# the admin's own lines
10.1.1.1\tstorage01
"""


def test_hosts_block_keeps_the_admins_lines_with_a_backup(site, tmp_path, capsys):
    conf, state = site
    hosts = tmp_path / "hosts"
    hosts.write_text(ADMIN_HOSTS)
    hosts.chmod(0o640)
    assert wwfast(conf, state, "configure", "hosts", "--output", str(hosts)) == 0
    out = capsys.readouterr().out
    text = hosts.read_text()
    assert text.startswith(ADMIN_HOSTS + "\n" + hostsfile.BEGIN)
    assert "192.168.77.11   n1 n1-default n1-eth0\n" in text
    assert "192.168.77.12   n2 n2-default n2-eth0\n" in text and "192.168.78.12   n2-ipmi\n" in text
    assert "10.10.0.11      n1-ib n1-ib0\n" in text
    assert text.rstrip().endswith(hostsfile.END)
    assert (os.stat(hosts).st_mode & 0o777) == 0o640
    assert f"hosts: {hosts} updated" in out and "wwfast-backup" in out
    assert pathlib.Path(str(hosts) + ".wwfast-backup").read_text() == ADMIN_HOSTS
    # the admin adds a line after the block; a node goes away: the block changes, their lines stay
    hosts.write_text(hosts.read_text() + "10.1.1.2\tstorage02\n")
    (conf / "nodes.yaml").write_text(NODES.split("  n2:")[0])
    assert wwfast(conf, state, "configure", "hosts", "--output", str(hosts)) == 0
    text = hosts.read_text()
    assert "n2" not in text and text.startswith(ADMIN_HOSTS) and text.endswith(hostsfile.END + "\n10.1.1.2\tstorage02\n")
    before = os.stat(hosts)
    capsys.readouterr()
    assert wwfast(conf, state, "configure", "hosts", "--output", str(hosts)) == 0
    assert "unchanged; nothing written" in capsys.readouterr().out
    assert os.stat(hosts).st_ino == before.st_ino


def test_a_mistyped_conf_dir_configures_nothing(site, tmp_path, capsys):
    """Not an empty cluster: `/etc/hosts` would lose every node's name."""
    _, state = site
    hosts = tmp_path / "hosts"
    hosts.write_text(ADMIN_HOSTS)
    for args in (["hosts", "--output", str(hosts)], ["dhcp", "--output", str(tmp_path / "d.conf")]):
        assert wwfast(tmp_path / "nonexistent", state, "configure", *args) != 0
        assert f"{tmp_path / 'nonexistent'}: the configuration directory does not exist" in capsys.readouterr().err
    assert hosts.read_text() == ADMIN_HOSTS and not (tmp_path / "d.conf").exists()


def test_hosts_with_broken_markers_is_left_alone(site, tmp_path, capsys):
    conf, state = site
    hosts = tmp_path / "hosts"
    broken = ADMIN_HOSTS + hostsfile.BEGIN + "\n1.2.3.4 x\n"
    hosts.write_text(broken)
    assert wwfast(conf, state, "configure", "hosts", "--output", str(hosts)) == 1
    assert "nothing was written" in capsys.readouterr().err and hosts.read_text() == broken


def test_tftp_show_lists_each_architecture_and_what_is_missing(tmp_path, capsys):
    root, source = tmp_path / "tftp", tmp_path / "ipxe"
    root.mkdir()
    source.mkdir()
    (root / "undionly.kpxe").write_bytes(b"x" * 100)
    (source / "snponly.efi").write_bytes(b"y" * 50)
    (tmp_path / "wwfast.yaml").write_text(f"tftp:\n  tftproot: {root}\npaths:\n  ipxesource: {source}\n")
    assert wwfast(tmp_path, tmp_path / "state", "configure", "tftp", "--show") == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.split()[:2] == ["00:00", "x86"] and line.endswith("ok, 100 bytes") for line in lines), lines
    assert any(line.startswith("  00:07 x86-64 UEFI") and f"MISSING: `wwfast configure tftp` copies it from "
               f"{source}/snponly.efi" in line for line in lines), lines
    assert any(line.startswith("  00:0B arm64 UEFI") and "not in" in line for line in lines), lines
    assert "3 boot file(s) missing" in lines[-1]
    assert not (root / "snponly.efi").exists()
    # without --show the missing ones that exist are copied; a second run has nothing to do
    assert wwfast(tmp_path, tmp_path / "state", "configure", "tftp") == 0
    assert (root / "snponly.efi").read_bytes() == b"y" * 50
    assert f"copied {root}/snponly.efi" in capsys.readouterr().out
    assert wwfast(tmp_path, tmp_path / "state", "configure", "tftp") == 0
    assert "copied" not in capsys.readouterr().out


def test_configure_all_writes_dhcp_tftp_and_hosts(site, tmp_path, capsys, monkeypatch):
    conf, state = site
    root = tmp_path / "tftp"
    (conf / "wwfast.yaml").write_text(SETTINGS.format(extra=f"  config file: {tmp_path}/dnsmasq.d/wwfast.conf\n"
                                                            f"tftp:\n  tftproot: {root}\n"))
    monkeypatch.setattr(hostsfile, "DEFAULT_PATH", str(tmp_path / "hosts"))
    assert wwfast(conf, state, "configure", "--all") == 0
    out = capsys.readouterr().out
    assert (tmp_path / "dnsmasq.d" / "wwfast.conf").is_file() and (tmp_path / "hosts").is_file()
    assert (root / "undionly.kpxe").read_bytes() == pathlib.Path("/usr/lib/ipxe/undionly.kpxe").read_bytes()
    assert "dhcp (dnsmasq, 4 hosts)" in out and "hosts:" in out and "tftp: copied" in out
    assert wwfast(conf, state, "configure", "--all") == 0
    out = capsys.readouterr().out
    assert out.count("unchanged; nothing written") == 2 and "copied" not in out
    assert wwfast(conf, state, "configure") == 1
    assert "say what to configure" in capsys.readouterr().err


def test_tftp_show_with_grubboot_lists_the_grub_chain(tmp_path, capsys):
    root = tmp_path / "tftp"
    root.mkdir()
    (root / "shim.efi").write_bytes(b"s" * 10)
    (tmp_path / "wwfast.yaml").write_text(f"warewulf:\n  grubboot: true\ntftp:\n  tftproot: {root}\n")
    assert wwfast(tmp_path, tmp_path / "state", "configure", "tftp", "--show") == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("  grubboot: shim.efi") and line.endswith("ok, 10 bytes") for line in lines), lines
    assert any(line.startswith("  grubboot: grubx64.efi") and "MISSING" in line for line in lines), lines
    # and the DHCP configuration sends x86-64 UEFI firmware to shim.efi, iPXE clients still to their script
    (tmp_path / "wwfast.yaml").write_text("warewulf:\n  grubboot: true\ndhcp:\n  enabled: true\n")
    assert wwfast(tmp_path, tmp_path / "state", "configure", "dhcp", "--show") == 0
    text = capsys.readouterr().out
    assert "dhcp-boot=tag:!wwfast-ipxe,tag:wwfast-arch-7,shim.efi,,127.0.0.1" in text
    assert "dhcp-boot=tag:!wwfast-ipxe,tag:wwfast-arch-0,undionly.kpxe,,127.0.0.1" in text
    assert "dhcp-boot=tag:wwfast-efi-http,http://127.0.0.1:9873/efiboot/shim.efi" in text
