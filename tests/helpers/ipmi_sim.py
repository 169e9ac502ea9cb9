"""Simulated BMCs for tests: one OpenIPMI `ipmi_sim` per node on its own loopback UDP port.

    with bmc_sims(tmp_path, ["n1", "n2"], password="s3cret") as sims:
        sims["n1"].port          # IPMI LAN port (lan and lanplus)
        sims["n1"].power_log()   # ["on", "off", ...]: what the simulator's power control did

Power control: ipmi_sim runs `startcmd` on power on and kills it on power off (it refuses power on
without a `serial ... codec VM` line, so each BMC also listens on a TCP port nobody connects to).
Our startcmd appends "on"/"off" to the BMC's power log, so a test reads what the simulator did.
Sensors: one temperature sensor "CPU temp" reading 42 degrees C (SDR compiled by sdrcomp).
Console: `sol_port` connects the BMC's Serial-over-LAN to a TCP server the test runs.
All simulators are started at once and are ready when each has printed its banner.
"""
import contextlib
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import time

IPMI_SIM = "ipmi_sim"
SDR_SOURCE = """\
sdr type 1
    sensor_owner_id 0x20
    sensor_owner_lun 0
    channel_number 0
    sensor_number 1
    entity_id system_board
    entity_instance 1
    sensor_type Temperature
    event_reading_type_code 1
    analog_data_format unsigned
    rate_unit none
    modifier_unit none
    percentage false
    base_unit degrees_C
    modifier_unit_code unspecified
    linearization linear
    m 1
    tolerance 0
    b 0
    accuracy 1
    accuracy_exp 0
    sensor_direction input
    r_exp 0
    b_exp 0
    sensor_maximum 255
    sensor_minimum 0
    id_string "CPU temp"
endsdr
"""
EMU = """\
mc_setbmc 0x20
mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr
sensor_add 0x20 0 1 0x01 0x01
sensor_set_event_support 0x20 0 1 enable scanning per-state 000000000000000 000000000000000 000000000000000 000000000000000
sensor_set_value 0x20 0 1 42 0
mc_enable 0x20
"""
# Appends on/off to its log; `wait` returns at once on SIGTERM, so "off" is written before it exits.
POWER_SCRIPT = """\
log=$1
trap 'echo off >> "$log"; kill $child 2>/dev/null; exit 0' TERM
echo on >> "$log"
sleep 100000 &
child=$!
wait $child
"""
LAN_CONF = """\
name "{name}"
set_working_mc 0x20
  startlan 1
    addr 127.0.0.1 {port}
    priv_limit admin
    allowed_auths_callback none md2 md5 straight
    allowed_auths_user none md2 md5 straight
    allowed_auths_operator none md2 md5 straight
    allowed_auths_admin none md2 md5 straight
    guid {guid}
  endlan
  serial 15 127.0.0.1 {serial_port} codec VM
  {sol}
  startcmd "/bin/sh {script} {log}"
  startnow false
  poweroff_wait 0
  kill_wait 5
  user 2 true "{user}" "{password}" admin 10 none md2 md5 straight
"""


class BmcSim:
    def __init__(self, name, port, serial_port, log, proc):
        self.name, self.port, self.serial_port, self.log, self.proc = name, port, serial_port, log, proc

    def power_log(self):
        try:
            return self.log.read_text().split()
        except FileNotFoundError:
            return []

    def wait_power_log(self, expected, timeout=60):
        """Wait until the log reads `expected` (the power script writes it as its last act)."""
        deadline = time.monotonic() + timeout
        while self.power_log() != expected:
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name}: power log {self.power_log()} != {expected}")
            time.sleep(0.1)


def free_ports(count, kind=socket.SOCK_DGRAM):
    """`count` distinct free loopback ports (held open together, then released)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, kind)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _compile_sdr(work):
    src = work / "sensors.sdrs"
    src.write_text(SDR_SOURCE)
    out = work / "sensors.bsdr"
    subprocess.run(["sdrcomp", "-o", str(out), str(src)], check=True, capture_output=True)
    return out


def _start(work, names, user, password, sol_ports, attempt):
    udp = free_ports(len(names))
    tcp = free_ports(len(names), socket.SOCK_STREAM)
    sdr = work / "sensors.bsdr"
    script = work / "power.sh"
    sims = {}
    for i, name in enumerate(names):
        d = work / (name if not attempt else f"{name}.{attempt}")
        (d / "state" / "ipmi_sim" / name).mkdir(parents=True)
        shutil.copyfile(sdr, d / "state" / "ipmi_sim" / name / "sdr.20.main")
        sol = f'sol "tcp:127.0.0.1:{sol_ports[name]}" 115200' if name in sol_ports else ""
        (d / "lan.conf").write_text(LAN_CONF.format(
            name=name, port=udp[i], serial_port=tcp[i], sol=sol, script=script, log=d / "power.log",
            user=user, password=password, guid=f"{i + 1:032x}"))
        with open(d / "sim.log", "wb") as log:
            proc = subprocess.Popen([IPMI_SIM, "-c", str(d / "lan.conf"), "-f", str(work / "sim.emu"),
                                     "-s", str(d / "state"), "-n"], stdin=subprocess.DEVNULL,
                                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        sims[name] = BmcSim(name, udp[i], tcp[i], d / "power.log", proc)
    return sims


def _bound_udp_ports():
    ports = set()
    with open("/proc/net/udp") as f:
        next(f)
        for line in f:
            local = line.split()[1]  # 0100007F:1F90
            ports.add(int(local.split(":")[1], 16))
    return ports


def _wait_ready(sims, timeout=60):
    """A simulator is ready once its LAN socket is bound (it binds after reading its command file);
    one that exits first failed (its output is in its directory's sim.log)."""
    waiting = dict(sims)
    failed = []
    deadline = time.monotonic() + timeout
    while waiting and time.monotonic() < deadline:
        bound = _bound_udp_ports()
        for name, sim in list(waiting.items()):
            if sim.port in bound:
                del waiting[name]
            elif sim.proc.poll() is not None:
                failed.append(name)
                del waiting[name]
        if waiting:
            time.sleep(0.05)
    return failed + sorted(waiting)


def stop(sims):
    for sim in sims.values():
        with contextlib.suppress(ProcessLookupError):
            os.killpg(sim.proc.pid, signal.SIGKILL)  # the simulator and its power script
    for sim in sims.values():
        sim.proc.wait()


@contextlib.contextmanager
def bmc_sims(work, names, user="admin", password="s3cret", sol_ports=None):
    work = pathlib.Path(work) / "bmcs"
    work.mkdir(parents=True, exist_ok=True)
    (work / "sim.emu").write_text(EMU)
    (work / "power.sh").write_text(POWER_SCRIPT)
    _compile_sdr(work)
    sims = {}
    try:
        pending = list(names)
        for attempt in range(3):  # a port taken by someone else between free_ports() and the bind
            started = _start(work, pending, user, password, sol_ports or {}, attempt)
            sims.update(started)
            failed = _wait_ready(started)
            if not failed:
                break
            stop({n: sims.pop(n) for n in failed})
            pending = failed
            if attempt == 2:
                log = (work / (failed[0] if not attempt else f"{failed[0]}.{attempt}") / "sim.log").read_text(errors="replace")
                raise AssertionError(f"ipmi_sim did not start for {failed}: {log}")
        yield sims
    finally:
        stop(sims)
