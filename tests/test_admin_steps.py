"""README's "From a new server to booting nodes", run as written: the three commands are read from the README
itself, then `wwfast configure --all` and `make all serve` run as processes with $WWFAST_CONF/$WWFAST_STATE
naming the test's directories. dnsmasq checks the DHCP file, tftp-hpa fetches the BIOS boot file configure put
in the TFTP root, curl-like HTTP gets the node's iPXE script from the server `make serve` started.

/etc is the test's own copy in a private mount namespace (unshare), with /etc/hosts bind-mounted as a
container has it, so `configure --all` writes the machine's real path names and touches nothing of the host.
"""
import os
import pathlib
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from helpers.busybox_tree import make_busybox_tree

ROOT = pathlib.Path(__file__).resolve().parent.parent
MAC = "52:54:00:a5:00:01"
ADMIN_HOSTS = "127.0.0.1\tlocalhost\n10.1.1.1\tstorage01\n"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def readme_steps():
    """The commands of the README's three-step block (comments and continuation lines dropped)."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## From a new server to booting nodes", 1)[1]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    return [line.split("#", 1)[0].strip() for line in block.splitlines() if not line.lstrip().startswith("#")]


def settings(tmp, http_port, tftp_port):
    return f"""\
ipaddr: 10.9.0.1
netmask: 255.255.255.0
warewulf:
  port: {http_port}
  bind: 127.0.0.1
  secure: false
tftp:
  port: {tftp_port}
  bind: 127.0.0.1
  tftproot: {tmp}/tftpboot
dhcp:
  enabled: true
  range start: 10.9.0.100
  range end: 10.9.0.150
  config file: /etc/dnsmasq.d/wwfast.conf
compression:
  gzip: false
"""


NODES = f"""\
nodes:
  a1:
    image name: img
    kernel: {{args: [console=ttyS0]}}
    system overlay: [wwinit, hostname]
    network devices:
      default: {{hwaddr: "{MAC}", ipaddr: 10.9.0.11, netmask: 255.255.255.0}}
"""


def free_port(kind):
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url):
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def wait_healthy(proc, url, log, timeout=120):
    """serve is up when /healthz answers (a backstop deadline; `make all` runs first)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"make all serve exited {proc.returncode}:\n{log.read_text()[-4000:]}")
        try:
            if get(url + "/healthz")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    pytest.fail(f"serve did not answer within {timeout}s:\n{log.read_text()[-4000:]}")


def in_own_etc(etc, hosts, command):
    """`command` in a private mount namespace whose /etc is `etc` and whose /etc/hosts is the file `hosts`
    bind-mounted (a mount point, as in a container)."""
    script = (f"mount --bind {shlex.quote(str(etc))} /etc && mount --bind {shlex.quote(str(hosts))} /etc/hosts "
              f"&& exec {command}")
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script]


def test_readme_three_steps_take_a_new_server_to_serving_its_nodes(tmp_path, kernel_path):
    steps = readme_steps()
    assert steps[0].startswith("$EDITOR conf/wwfast.yaml conf/nodes.yaml") and steps[1:] == \
        ["wwfast configure --all", "make all serve"], steps
    conf, state = tmp_path / "conf", tmp_path / "var"
    conf.mkdir()
    http_port, tftp_port = free_port(socket.SOCK_STREAM), free_port(socket.SOCK_DGRAM)
    # step 1: the settings and the nodes (and an image, as the README's preamble says)
    (conf / "wwfast.yaml").write_text(settings(tmp_path, http_port, tftp_port))
    (conf / "nodes.yaml").write_text(NODES)
    tree = make_busybox_tree(tmp_path / "tree")
    os.makedirs(f"{tree}/boot")
    shutil.copyfile(kernel_path, f"{tree}/boot/{kernel_path.name}")
    bindir = os.path.dirname(sys.executable)
    env = dict(os.environ, WWFAST_CONF=str(conf), WWFAST_STATE=str(state), PATH=f"{bindir}:{os.environ['PATH']}")
    subprocess.run(["wwfast", "image", "import", str(tree), "img"], env=env, check=True, capture_output=True)
    etc, hosts = tmp_path / "etc", tmp_path / "hosts"
    subprocess.run(["cp", "-a", "/etc/.", str(etc)], check=True)
    hosts.write_text(ADMIN_HOSTS)

    # step 2, as written
    out = subprocess.run(in_own_etc(etc, hosts, steps[1]), cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    dnsmasq_conf = etc / "dnsmasq.d" / "wwfast.conf"
    assert "dhcp (dnsmasq, 1 hosts): /etc/dnsmasq.d/wwfast.conf created" in out.stdout, out.stdout
    assert f"dhcp-host={MAC},set:wwfast-node,10.9.0.11,a1" in dnsmasq_conf.read_text().splitlines()
    check = subprocess.run(["dnsmasq", "--test", f"--conf-file={dnsmasq_conf}"], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    assert f"tftp: copied {tmp_path}/tftpboot/undionly.kpxe" in out.stdout, out.stdout
    # /etc/hosts: the admin's lines kept, the cluster's block added in place (a mount point), a backup
    assert "(in place: the file is a mount point" in out.stdout, out.stdout
    text = hosts.read_text()
    assert text.startswith(ADMIN_HOSTS) and "10.9.0.11       a1 a1-default\n" in text, text
    assert (etc / "hosts.wwfast-backup").read_text() == ADMIN_HOSTS

    # a second run: an unchanged cluster rewrites nothing
    before = {p: os.stat(p) for p in (dnsmasq_conf, hosts)}
    again = subprocess.run(in_own_etc(etc, hosts, steps[1]), cwd=tmp_path, env=env, capture_output=True, text=True)
    assert again.returncode == 0 and again.stdout.count("unchanged; nothing written") == 2, again.stdout
    assert "copied" not in again.stdout
    assert all((os.stat(p).st_mtime_ns, os.stat(p).st_ino) == (s.st_mtime_ns, s.st_ino) for p, s in before.items())

    # step 3, as written: publish, then serve until stopped
    log = tmp_path / "make.log"
    with open(log, "wb") as f:
        proc = subprocess.Popen(shlex.split(steps[2]), cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=f,
                                stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{http_port}"
    try:
        wait_healthy(proc, base, log)
        code, script = get(f"{base}/ipxe/{MAC}")
        assert code == 200 and b"#!ipxe" in script and b"/kernel/" in script, script
        got = tmp_path / "got.kpxe"
        subprocess.run(["tftp", "-m", "binary", "127.0.0.1", str(tftp_port), "-c", "get", "undionly.kpxe",
                        str(got)], capture_output=True, timeout=60)
        assert got.read_bytes() == (tmp_path / "tftpboot" / "undionly.kpxe").read_bytes()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
    made = log.read_text()
    assert "define: wrote 1 nodes" in made and "stages.serve" in made, made
