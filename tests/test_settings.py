"""Server settings: wwfast.yaml, an unmodified warewulf.conf, defaults, errors with file and line."""
import pytest

from wwfast.define import settings
from wwfast.errors import ConfigError

# Warewulf's packaged etc/warewulf.conf (EL9), unmodified (reference B2).
WAREWULF_CONF = """\
ipaddr: 10.0.0.1
netmask: 255.255.252.0
warewulf:
  secure: false
  update interval: 60
  autobuild overlays: true
  host overlay: true
  systemd name: warewulfd
dhcp:
  enabled: true
  range start: 10.0.1.1
  range end: 10.0.1.255
  systemd name: dhcpd
  template: default
tftp:
  enabled: true
  systemd name: tftp
  ipxe:
    00:09: ipxe-snponly-x86_64.efi
    00:00: undionly.kpxe
    00:0B: arm64-efi/snponly.efi
    00:07: ipxe-snponly-x86_64.efi
nfs:
  enabled: true
  export paths:
  - path: /home
    export options: rw,sync
  - path: /opt
    export options: ro,sync,no_root_squash
  systemd name: nfs-server
image mounts:
  - source: /etc/resolv.conf
    dest: /etc/resolv.conf
    readonly: true
ssh:
  key types: [ed25519, ecdsa, rsa]
"""


def test_warewulf_conf_accepted_as_is(tmp_path):
    (tmp_path / "warewulf.conf").write_text(WAREWULF_CONF)
    s = settings.load(str(tmp_path))
    assert (s.address, s.netmask, s.http_port, s.secure, s.update_interval) == ("10.0.0.1", "255.255.252.0", 9873, False, 60)
    assert s.ipxe_binaries["00:0B"] == "arm64-efi/snponly.efi" and s.ipxe_binaries["00:00"] == "undionly.kpxe"
    assert (s.dhcp_enabled, s.dhcp_range_start, s.dhcp_range_end) == (True, "10.0.1.1", "10.0.1.255")
    assert s.path.endswith("warewulf.conf") and len(s.digest) == 64


def test_demo_settings(project_root):
    s = settings.load(str(project_root / "conf"))
    assert (s.address, s.http_port, s.http_bind, s.tftp_port, s.tftp_bind) == ("10.0.2.2", 9873, "127.0.0.1", 6969, "127.0.0.1")
    assert (s.secure, s.update_interval, s.zstd_level, s.gzip, s.tftp_root) == (False, 10, 3, True, "/usr/lib/ipxe")
    assert set(s.as_dict()) >= {"address", "netmask", "image_excludes", "threads", "path", "digest"}


def test_wwfast_yaml_wins_and_missing_gives_defaults(tmp_path):
    assert settings.load(str(tmp_path)).http_port == 9873 and settings.load(str(tmp_path)).path is None
    (tmp_path / "warewulf.conf").write_text("warewulf: {port: 1000}\n")
    (tmp_path / "wwfast.yaml").write_text("ipaddr: 192.168.1.1/16\nwarewulf: {port: 2000}\n")
    s = settings.load(str(tmp_path))
    assert (s.http_port, s.address, s.netmask) == (2000, "192.168.1.1", "255.255.0.0")


@pytest.mark.parametrize("text, expected", [
    ("warewulf:\n  prot: 1\n", 'wwfast.yaml:2: warewulf.prot: unknown key "prot" (did you mean "port"?)'),
    ("warewulf:\n  port: 70000\n", "wwfast.yaml:2: warewulf.port: 70000 is out of range"),
    ("tftp:\n  bind: nowhere\n", 'wwfast.yaml:2: tftp.bind: bad IP address "nowhere"'),
    ("compression:\n  zstd level: 99\n", "wwfast.yaml:2: compression.zstd level: 99 is out of range 1..22"),
    ("ipaddr: 10.0.0\n", 'wwfast.yaml:1: ipaddr: bad IPv4 address "10.0.0"'),
    ("warewulf:\n  secure: perhaps\n", 'wwfast.yaml:2: warewulf.secure: "perhaps" is not a boolean'),
    ("warewulf: [1\n", "wwfast.yaml:2: YAML syntax error"),
])
def test_settings_errors(tmp_path, text, expected):
    (tmp_path / "wwfast.yaml").write_text(text)
    with pytest.raises(ConfigError) as info:
        settings.load(str(tmp_path))
    assert f"{tmp_path}/{expected}" in str(info.value), str(info.value)
