"""`wwfast power`, `node sensors`, `node console` against OpenIPMI's BMC simulator (one per node, loopback)."""
import json
import os
import pathlib
import pty
import select
import socket
import subprocess
import sys
import threading
import time

from helpers.ipmi_sim import bmc_sims
from wwfast.ops.fanout import run_all

WWFAST = str(pathlib.Path(sys.executable).with_name("wwfast"))
PASSWORD = "s3cret-Pw"


def write_conf(conf, nodes):
    """nodes: {name: {ipmi fields}}; every node gets 127.0.0.1, user admin and cipher suite 3."""
    conf.mkdir(parents=True, exist_ok=True)
    lines = ["nodeprofiles:", "  bmc:", "    ipmi:", "      ipaddr: 127.0.0.1", "      username: admin",
             f"      password: {PASSWORD}", "      interface: lanplus", "      tags: {cipher: '3'}", "nodes:"]
    for name, ipmi in nodes.items():
        lines += [f"  {name}:", "    profiles: [bmc]", "    ipmi:"]
        lines += [f"      {k}: {json.dumps(str(v))}" for k, v in ipmi.items()]
    (conf / "nodes.yaml").write_text("\n".join(lines) + "\n")


def ww(conf, *args, ok=True, timeout=300):
    out = subprocess.run([WWFAST, "--conf", str(conf), "--state", str(conf.parent / "var"), *args],
                         capture_output=True, text=True, timeout=timeout)
    if ok is not None:
        assert (out.returncode == 0) == ok, (args, out.returncode, out.stdout, out.stderr)
    return out


def results(out):
    return {r["node"]: r for r in json.loads(out.stdout)["results"]}


def wait_status(conf, node, state, timeout=60):
    """The simulator reports off once it has reaped the power script: ask until it says `state`."""
    deadline = time.monotonic() + timeout
    while True:
        r = results(ww(conf, "power", "status", node, "--json", ok=None))[node]
        if r["state"] == state or time.monotonic() > deadline:
            return r
        time.sleep(0.2)


def test_power_state_changes_reach_the_simulator(tmp_path):
    names = ["n1", "n2", "n3"]
    with bmc_sims(tmp_path, names, password=PASSWORD) as sims:
        conf = tmp_path / "conf"
        write_conf(conf, {n: {"port": sims[n].port} for n in names[:2]}
                   | {"n3": {"port": sims["n3"].port, "interface": "lan"}})   # IPMI 1.5 too
        out = ww(conf, "power", "status", "n[1-3]")
        assert sorted(out.stdout.splitlines()[:3]) == [f"{n}: Chassis Power is off" for n in names]
        assert "chassis power status: 3 nodes, 3 ok, 0 failed" in out.stdout

        out = ww(conf, "power", "on", "n*")
        assert sorted(out.stdout.splitlines()[:3]) == [f"{n}: Chassis Power Control: Up/On" for n in names]
        for n in names:      # the simulator ran power on (its startcmd runs after the reply: wait for its record)
            sims[n].wait_power_log(["on"])
        assert {n: r["state"] for n, r in results(ww(conf, "power", "status", "n[1-3]", "--json")).items()} == \
            {"n1": "on", "n2": "on", "n3": "on"}

        ww(conf, "power", "off", "n2")
        sims["n2"].wait_power_log(["on", "off"])
        assert wait_status(conf, "n2", "off")["state"] == "off"
        assert sims["n1"].power_log() == ["on"] and sims["n3"].power_log() == ["on"]

        ww(conf, "power", "cycle", "n1")
        sims["n1"].wait_power_log(["on", "off", "on"])

        out = ww(conf, "power", "reset", "n3", ok=False)   # the simulator has no reset without a VM
        assert "n3: FAILED: Set Chassis Power Control to Reset failed" in out.stdout
        assert "1 failed: n3" in out.stderr

        out = ww(conf, "power", "on", "n[1-2]", "--show")
        assert f"-f" not in out.stdout and PASSWORD not in out.stdout and "-P '********'" in out.stdout
        assert sims["n1"].power_log() == ["on", "off", "on"]               # --show ran nothing


def test_wrong_credentials_give_a_clear_error_per_node(tmp_path):
    names = ["n1", "n2", "n3", "n4"]
    with bmc_sims(tmp_path, names, password=PASSWORD) as sims:
        conf = tmp_path / "conf"
        write_conf(conf, {"n1": {"port": sims["n1"].port},
                          "n2": {"port": sims["n2"].port, "password": "wrong"},
                          "n3": {"port": sims["n3"].port, "username": "nobody"},
                          "n4": {"port": sims["n4"].port, "password": "wrong", "interface": "lan"}})
        out = ww(conf, "power", "status", "n[1-4]", ok=False)
        lines = dict(line.split(": ", 1) for line in out.stdout.splitlines())
        assert lines["n1"] == "Chassis Power is off"
        assert lines["n2"] == f'FAILED: login to BMC 127.0.0.1:{sims["n2"].port} as user "admin" refused: wrong password'
        assert lines["n3"] == f'FAILED: login to BMC 127.0.0.1:{sims["n3"].port} as user "nobody" refused: ' \
                              f'unknown user name'
        assert lines["n4"] == f'FAILED: login to BMC 127.0.0.1:{sims["n4"].port} as user "admin" refused: wrong password'
        assert "4 nodes, 1 ok, 3 failed: n[2-4]" in out.stderr

        data = json.loads(ww(conf, "power", "on", "n[1-3]", "--json", ok=False).stdout)
        assert (data["ok"], data["failed"]) == (1, 2)
        assert not data["results"][1]["ok"] and "wrong password" in data["results"][1]["error"]
        sims["n1"].wait_power_log(["on"])
        assert [sims[n].power_log() for n in names] == [["on"], [], [], []]


def test_unreachable_bmc_times_out_alone_and_passwords_stay_hidden(tmp_path):
    """n5's "BMC" is a socket of ours that never answers: its first packet tells us ipmitool is
    running, so we look at every process's command line and environment while it is."""
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    silent.settimeout(120)
    names = ["n1", "n2", "n3", "n4"]
    with bmc_sims(tmp_path, names, password=PASSWORD) as sims:
        conf = tmp_path / "conf"
        write_conf(conf, {n: {"port": sims[n].port} for n in names} | {"n5": {"port": silent.getsockname()[1]}})
        proc = subprocess.Popen([WWFAST, "--conf", str(conf), "power", "status", "n[1-5]", "--timeout", "10"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        silent.recvfrom(4096)
        leaks = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            for what in ("cmdline", "environ"):
                try:
                    data = pathlib.Path(f"/proc/{pid}/{what}").read_bytes()
                except OSError:
                    continue
                if PASSWORD.encode() in data:
                    leaks.append((pid, what, data[:200]))
        out, err = proc.communicate(timeout=120)
        silent.close()
    assert not leaks
    assert proc.returncode == 1
    lines = out.splitlines()
    assert sorted(lines[:4]) == [f"{n}: Chassis Power is off" for n in names]   # answered before n5 ended
    assert lines[4].startswith("n5: FAILED: ")
    assert ("within 10 s" in lines[4]) or ("no IPMI session with BMC" in lines[4])
    assert "5 nodes, 4 ok, 1 failed: n5" in err


def test_fanout_bounds_jobs_in_flight():
    lock, in_flight, peak = threading.Lock(), [0], [0]
    enough = threading.Event()

    def job(i):
        with lock:
            in_flight[0] += 1
            peak[0] = max(peak[0], in_flight[0])
            if in_flight[0] == 3:
                enough.set()
        enough.wait(60)   # the first jobs wait until three run at once: a 4th could not have started
        with lock:
            in_flight[0] -= 1
        return i

    seen = []
    assert sorted(run_all(range(10), job, fanout=3, on_result=seen.append)) == list(range(10))
    assert peak[0] == 3 and sorted(seen) == list(range(10))


def test_two_hundred_bmcs_with_the_fanout(tmp_path):
    names = [f"c{i:03d}" for i in range(1, 201)]
    with bmc_sims(tmp_path, names, password=PASSWORD) as sims:
        conf = tmp_path / "conf"
        write_conf(conf, {n: {"port": sims[n].port} for n in names})
        data = json.loads(ww(conf, "power", "on", "c[001-200]", "--fanout", "50", "--json").stdout)
        assert (data["ok"], data["failed"]) == (200, 0)
        for n in names:
            sims[n].wait_power_log(["on"])
        # at most 50 in flight at any moment, from the recorded start and duration of each command
        events = sorted([(r["started"], 1) for r in data["results"]] +
                        [(r["ended"], -1) for r in data["results"]], key=lambda e: (e[0], e[1]))
        running = peak = 0
        for _, step in events:
            running += step
            peak = max(peak, running)
        assert 1 < peak <= 50
        status = results(ww(conf, "power", "status", "c[001-200]", "--json"))
        assert {r["state"] for r in status.values()} == {"on"} and len(status) == 200


def test_sensors(tmp_path):
    with bmc_sims(tmp_path, ["n1", "n2"], password=PASSWORD) as sims:
        conf = tmp_path / "conf"
        write_conf(conf, {"n1": {"port": sims["n1"].port}, "n2": {"port": sims["n2"].port, "password": "bad"}})
        out = ww(conf, "node", "sensors", "n1")
        assert out.stdout.splitlines()[0].split("|")[0].strip() == "n1: CPU temp"
        assert "42 degrees C" in out.stdout
        out = ww(conf, "node", "sensors", "n1", "--full")
        assert "42.000" in out.stdout and "degrees C" in out.stdout
        out = ww(conf, "node", "sensors", "n[1-2]", "--json", ok=False)
        r = results(out)
        assert r["n1"]["ok"] and "CPU temp" in r["n1"]["output"]
        assert not r["n2"]["ok"] and "127.0.0.1" in r["n2"]["error"]


def test_console_over_serial_over_lan(tmp_path):
    """The BMC's SOL is wired to a TCP "serial port" of ours; the escape char comes from the node."""
    serial = socket.socket()
    serial.bind(("127.0.0.1", 0))
    serial.listen(1)
    serial.settimeout(60)
    got = []
    echoed = threading.Event()

    def node_side():
        conn, _ = serial.accept()   # the BMC connects at its start, before anyone opens SOL:
        conn.settimeout(0.5)         # what it reads then is dropped, so repeat the banner until answered
        data = b""
        deadline = time.monotonic() + 90
        while b"typed" not in data and time.monotonic() < deadline:
            conn.sendall(b"login banner of n1\r\n")
            try:
                chunk = conn.recv(100)
            except socket.timeout:
                continue
            if not chunk:
                break
            data += chunk
        got.append(data)
        conn.sendall(b"echo from the node\r\n")
        echoed.wait(90)             # the console showed it (a record), not a 0.5 s guess; 90 s: a backstop
        conn.close()

    server = threading.Thread(target=node_side, daemon=True)
    server.start()
    with bmc_sims(tmp_path, ["n1"], password=PASSWORD, sol_ports={"n1": serial.getsockname()[1]}) as sims:
        conf = tmp_path / "conf"
        write_conf(conf, {"n1": {"port": sims["n1"].port, "escapechar": "&"}})
        pid, fd = pty.fork()
        if pid == 0:
            os.execv(WWFAST, [WWFAST, "--conf", str(conf), "node", "console", "n1"])
        screen = b""
        typed = quit_sent = False
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if select.select([fd], [], [], 1)[0]:
                try:
                    chunk = os.read(fd, 4096)
                except OSError:
                    break
                if not chunk:
                    break
                screen += chunk
            if b"login banner of n1" in screen and not typed:
                os.write(fd, b"typed\r")
                typed = True
            if b"echo from the node" in screen and not quit_sent:
                echoed.set()
                os.write(fd, b"\r&.")
                quit_sent = True
        echoed.set()                # (also when it never came: let the node side end)
        if not quit_sent:
            os.kill(pid, 9)
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    server.join(10)
    serial.close()
    assert b"leave with &." in screen and b"echo from the node" in screen, screen
    assert got and b"typed" in got[0]
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, screen


def test_node_list_masks_passwords(tmp_path):
    conf = tmp_path / "conf"
    write_conf(conf, {"n1": {"port": 6230}})
    for args in (["-i"], ["--yaml"], ["--json"], ["--all"]):
        out = ww(conf, "node", "list", *args)
        assert PASSWORD not in out.stdout and "********" in out.stdout, args
    assert PASSWORD in ww(conf, "node", "list", "--yaml", "--show-passwords").stdout
    assert PASSWORD not in ww(conf, "profile", "list", "--yaml").stdout
    assert PASSWORD in ww(conf, "profile", "list", "--json", "--show-passwords").stdout
