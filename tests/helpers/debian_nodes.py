"""A cluster of Debian 12 systemd nodes for the Debian boot test and `make demo-debian`.

`write_conf()` makes a conf directory: settings for QEMU user networking (the server is 10.0.2.2 to the
nodes), the nodes (static addresses, devices named `lan0` so the name comes from the overlays, found
by MAC), and two site overlays:
- `debian-report` (system overlay): a systemd service that waits for the boot to finish and prints, on
  the console, `WWFAST-NODE key value` lines (helpers.qemu_nodes.node_report reads them): systemd's
  state (the `system` line comes as soon as the boot is finished: its time is the boot time), the hostname, the interface with the node's MAC and its address, what systemd-networkd says
  of it (the .network file it applied), the node agent's service state, the SSH host key, the mounts
  of `/`, whether pivot_root works, and the marker files; then `WWFAST-NODE done`. A systemd path unit
  prints `WWFAST-NODE runtime-update <text>` each time the runtime marker changes: the record of the
  node agent bringing a newly published runtime overlay.
- `debian-runtime` (runtime overlay): /etc/wwfast-markers/runtime, "runtime overlay of NODE generation G".
"""
import os
import pathlib

IMAGE = "debian12"
KERNEL_ARGS = ["console=ttyS0", "quiet", "systemd.show_status=true", "panic=-1"]
UPDATE_INTERVAL = 5
MEMORY = 2048

REPORT_SCRIPT = r"""#!/bin/sh
# wwfast Debian boot report: facts a test reads from the console (WWFAST-NODE key value).
say() { echo "WWFAST-NODE $*"; }
state=$(systemctl is-system-running --wait 2>&1)
say system "$state"
[ "$state" = running ] || say failed-units $(systemctl --failed --plain --no-legend | cut -d' ' -f1)
say target "$(systemctl is-active multi-user.target)"
say analyze "$(systemd-analyze time 2>&1 | head -1)"
say hostname "$(uname -n)"
. /wwinit/config
for d in /sys/class/net/*; do
    [ "$(cat "$d/address")" = "$WWMAC" ] && dev=${d##*/}
done
if [ -n "${dev:-}" ]; then
    say netdev "$dev $WWMAC $(ip -o -4 addr show dev "$dev" | sed -n 's/.* inet \([^ ]*\) .*/\1/p' | tr '\n' ' ')"
    networkctl status "$dev" --no-pager 2>&1 | sed -n 's/^ *\(State\|Network File\|Link File\): */\1=/p' \
        | tr ' ' '_' | tr '\n' ' ' | sed 's/^/WWFAST-NODE networkd /; s/$/\n/'
fi
say agent "$(systemctl is-active wwfast-agent.service) $(systemctl show -p MainPID --value wwfast-agent.service)"
say sshd "$(systemctl is-active ssh.service)"
say hostkey "$(cut -d' ' -f1,2 /etc/ssh/ssh_host_ed25519_key.pub)"
say hello "$(command -v hello >/dev/null && hello || echo 'not installed')"
say rootfs "$(grep -E '^[^ ]+ / ' /proc/mounts | cut -d' ' -f1,3 | tr '\n' ';')"
if out=$(unshare --mount --propagation private sh -c \
        'mkdir -p /run/wwfast-pivot && mount -t tmpfs pivot /run/wwfast-pivot && mkdir /run/wwfast-pivot/old &&
         cd /run/wwfast-pivot && pivot_root . old && echo ok' 2>&1); then
    say pivot_root "$out"
else
    say pivot_root "failed: $(echo "$out" | tail -1)"
fi
for m in /etc/wwfast-markers/*; do
    [ -f "$m" ] && say marker "${m##*/} $(cat "$m")"
done
say blame "$(systemd-analyze blame --no-pager 2>&1 | head -6 | tr -s ' ' | tr '\n' ';')"
say done
"""

REPORT_SERVICE = """[Unit]
Description=wwfast Debian boot report on the console
After=multi-user.target

[Service]
Type=simple
ExecStart=/usr/local/sbin/wwfast-report
StandardOutput=journal+console

[Install]
WantedBy=multi-user.target
"""

WATCH_PATH = """[Unit]
Description=wwfast: report runtime overlay changes on the console

[Path]
PathChanged=/etc/wwfast-markers/runtime

[Install]
WantedBy=multi-user.target
"""

WATCH_SERVICE = """[Unit]
Description=wwfast: print the runtime marker

[Service]
Type=oneshot
ExecStart=/bin/sh -c 'echo "WWFAST-NODE runtime-update $(cat /etc/wwfast-markers/runtime)"'
StandardOutput=journal+console
"""


def write(path, text, mode=None):
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    if mode is not None:
        path.chmod(mode)


def settings_yaml(http_port, tftp_port):
    return f"""ipaddr: 10.0.2.2
netmask: 255.255.255.0
warewulf:
  port: {http_port}
  bind: 127.0.0.1
  secure: false
  update interval: {UPDATE_INTERVAL}
tftp:
  enabled: true
  port: {tftp_port}
  bind: 127.0.0.1
  tftproot: /usr/lib/ipxe
compression:
  zstd level: 3
  gzip: true
  threads: 0
"""


def nodes_yaml(nodes):
    """nodes: [(name, mac, ipaddr, root)]."""
    out = [f"""nodeprofiles:
  default:
    image name: {IMAGE}
    kernel:
      args: [{", ".join(KERNEL_ARGS)}]
    system overlay: [wwinit, hostname, network, ssh.host_keys, debian-report]
    runtime overlay: [debian-runtime]
    network devices:
      default:
        device: lan0
        netmask: 255.255.255.0
        gateway: 10.0.2.2
nodes:
"""]
    for name, mac, ipaddr, root in nodes:
        out.append(f"""  {name}:
    profiles: [default]
    root: {root}
    network devices:
      default:
        hwaddr: "{mac}"
        ipaddr: {ipaddr}
""")
    return "".join(out)


def set_generation(conf, generation):
    write(pathlib.Path(conf) / "overlays/debian-runtime/etc/wwfast-markers/runtime.j2",
          f"runtime overlay of {{{{ node.id }}}} generation {generation}\n")


def write_conf(conf, nodes, http_port, tftp_port):
    conf = pathlib.Path(conf)
    write(conf / "wwfast.yaml", settings_yaml(http_port, tftp_port))
    write(conf / "nodes.yaml", nodes_yaml(nodes))
    report = conf / "overlays/debian-report"
    write(report / "usr/local/sbin/wwfast-report", REPORT_SCRIPT, 0o755)
    units = report / "etc/systemd/system"
    write(units / "wwfast-report.service", REPORT_SERVICE)
    write(units / "wwfast-marker-watch.path", WATCH_PATH)
    write(units / "wwfast-marker-watch.service", WATCH_SERVICE)
    wants = units / "multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    for unit in ("wwfast-report.service", "wwfast-marker-watch.path"):
        link = wants / unit
        if not link.is_symlink():
            os.symlink(f"/etc/systemd/system/{unit}", link)
    set_generation(conf, "A")
