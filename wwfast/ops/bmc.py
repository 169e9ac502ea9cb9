"""One node's BMC through ipmitool: the command line, the password on a pipe, the result explained.

Why ipmitool: it is what every BMC vendor tests against, it speaks both IPMI 1.5 (`lan`) and 2.0
(`lanplus`, the only one with Serial-over-LAN), it is what Warewulf's BMC template runs, and it is a
Debian package. The Python libraries we looked at speak RMCP+ only (pyghmi) or are unmaintained.

The password never reaches a command line or an environment: it is written into a pipe whose read
end ipmitool opens as `-f /dev/fd/N` (its password-file option), so `ps` and /proc/PID/environ show
nothing. The node's `ipmi` fields (nodes.json): ipaddr, port, username, password, interface (lan or
lanplus, default lanplus), escapechar (SOL escape, default ~); the tag `cipher` picks the RMCP+ cipher
suite (`-C`, e.g. 3 for BMCs that do not list their cipher suites).
"""
import contextlib
import os
import shlex
import signal
import subprocess
import time

IPMITOOL = "ipmitool"
DEFAULT_INTERFACE = "lanplus"
DEFAULT_ESCAPE = "~"
INTERFACES = ("lan", "lanplus")

POWER_ACTIONS = {
    "on": ("chassis", "power", "on"),
    "off": ("chassis", "power", "off"),
    "cycle": ("chassis", "power", "cycle"),
    "reset": ("chassis", "power", "reset"),
    "soft": ("chassis", "power", "soft"),
    "status": ("chassis", "power", "status"),
}
SDR_LIST = ("sdr", "list")
SENSOR_LIST = ("sensor", "list")
CONSOLE = ("sol", "activate")

# ipmitool's words for a refused login (with -v), lower case -> what the admin should check
_AUTH_ERRORS = (
    ("rakp 2 hmac is invalid", "wrong password"),
    ("activate session command failed", "wrong password"),
    ("unauthorized name", "unknown user name"),
    ("invalid user name", "unknown user name"),
    ("invalid authentication algorithm", "the BMC refused the cipher suite (set the ipmi tag cipher)"),
    ("insufficient privilege", "the user lacks the privilege for this command"),
)


class BmcError(ValueError):
    """The node's ipmi fields do not describe a BMC we can reach."""


class Bmc:
    """Where and how to reach one node's BMC."""

    def __init__(self, node, address, port="", user="", password="", interface="", escape="", cipher=""):
        self.node = node
        self.address = address
        self.port = str(port or "")
        self.user = user or ""
        self.password = password or ""
        self.interface = interface or DEFAULT_INTERFACE
        self.escape = escape or DEFAULT_ESCAPE
        self.cipher = str(cipher or "")

    @classmethod
    def of_node(cls, node_id, node):
        """The BMC of a resolved node (nodes.json shape); BmcError when it has no address."""
        ipmi = node.get("ipmi") or {}
        if not ipmi.get("ipaddr"):
            raise BmcError("no BMC address (set ipmi ipaddr: wwfast node set NODE --ipmiaddr ADDR)")
        interface = ipmi.get("interface") or DEFAULT_INTERFACE
        if interface not in INTERFACES:
            raise BmcError(f'ipmi interface "{interface}" is not one of {", ".join(INTERFACES)}')
        port = ipmi.get("port") or ""
        if port and not (str(port).isdigit() and 0 < int(port) < 65536):
            raise BmcError(f'ipmi port "{port}" is not a port number')
        tags = ipmi.get("tags") or {}
        return cls(node_id, ipmi["ipaddr"], port, ipmi.get("username"), ipmi.get("password"),
                   interface, ipmi.get("escapechar"), tags.get("cipher", ""))

    @property
    def where(self):
        return f"{self.address}:{self.port or 623}"

    def argv(self, command, password_file=None, interface=None, verbose=False):
        """ipmitool's arguments; the password only as a file name (see password_pipe)."""
        interface = interface or self.interface
        args = [IPMITOOL, "-I", interface]
        if verbose:
            args.append("-v")
        if self.cipher and interface == "lanplus":
            args += ["-C", self.cipher]
        args += ["-H", self.address]
        if self.port:
            args += ["-p", self.port]
        if self.user:
            args += ["-U", self.user]
        if password_file:
            args += ["-f", password_file]
        if command == CONSOLE:
            args += ["-e", self.escape]
        return args + list(command)

    def shown(self, command, interface=None):
        """The command as `--show` prints it: the password masked."""
        args = self.argv(command, interface=interface)
        if self.password:
            at = args.index(command[0]) if command else len(args)
            args[at:at] = ["-P", "********"]
        return shlex.join(args)


@contextlib.contextmanager
def password_pipe(password):
    """(path, fd) of a pipe holding the password, for ipmitool -f; (None, None) without one."""
    if not password:
        yield None, None
        return
    read_fd, write_fd = os.pipe()
    try:
        os.write(write_fd, password.encode() + b"\n")  # far below the pipe's 64 KiB: never blocks
        os.close(write_fd)
        write_fd = None
        yield f"/dev/fd/{read_fd}", read_fd
    finally:
        os.close(read_fd)
        if write_fd is not None:
            os.close(write_fd)


class Result:
    """What one node's command did."""

    def __init__(self, node, ok, output="", error="", seconds=0.0, state=None, started=None):
        self.node, self.ok, self.output, self.error = node, ok, output, error
        self.seconds, self.state = seconds, state
        self.started = time.monotonic() if started is None else started  # when the command was started

    def as_dict(self, since=0.0):
        """`since`: a time.monotonic() origin for `started` (the whole run's start)."""
        return {"node": self.node, "ok": self.ok, "output": self.output, "error": self.error,
                "state": self.state, "started": round(self.started - since, 3),
                "ended": round(self.started + self.seconds - since, 3), "seconds": round(self.seconds, 3)}


def explain(stderr, bmc, returncode):
    """A one-line reason for a failed ipmitool run."""
    low = stderr.lower()
    for needle, reason in _AUTH_ERRORS:
        if needle in low:
            who = f'user "{bmc.user}"' if bmc.user else "the anonymous user"
            return f"login to BMC {bmc.where} as {who} refused: {reason}"
    if "unable to establish" in low or "no response" in low:
        return (f"no IPMI session with BMC {bmc.where} over {bmc.interface} "
                f"(unreachable, or wrong interface or credentials)")
    lines = [line.strip() for line in stderr.splitlines() if line.strip() and not line.startswith("Loading IANA")]
    return lines[-1] if lines else f"ipmitool exited with status {returncode}"


def power_state(output):
    """"on"/"off" from `chassis power status` output, else None."""
    words = output.strip().lower().split()
    return words[-1] if words[-3:-1] == ["power", "is"] and words[-1] in ("on", "off") else None


def run(bmc, command, timeout, verbose=False):
    """Run one ipmitool command against `bmc`; never raises for BMC trouble."""
    start = time.monotonic()
    env = dict(os.environ, LC_ALL="C")
    env.pop("IPMI_PASSWORD", None)  # never let a caller's -E password stand in for the node's
    with password_pipe(bmc.password) as (path, fd):
        try:
            proc = subprocess.Popen(bmc.argv(command, path, verbose=verbose), stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                                    pass_fds=(fd,) if fd is not None else (), start_new_session=True)
        except FileNotFoundError:
            return Result(bmc.node, False, error=f"{IPMITOOL} is not installed (apt-get install ipmitool)",
                          started=start)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            return Result(bmc.node, False, error=f"no answer from BMC {bmc.where} within {timeout:g} s",
                          seconds=time.monotonic() - start, started=start)
    seconds = time.monotonic() - start
    out, err = out.decode(errors="replace"), err.decode(errors="replace")
    if proc.returncode != 0:
        return Result(bmc.node, False, out.strip(), explain(err, bmc, proc.returncode), seconds, started=start)
    return Result(bmc.node, True, out.strip(), seconds=seconds, state=power_state(out), started=start)


def exec_console(bmc):
    """Replace this process by an interactive SOL session (IPMI 2.0: always over lanplus)."""
    read_fd = None
    if bmc.password:
        read_fd, write_fd = os.pipe()
        os.write(write_fd, bmc.password.encode() + b"\n")
        os.close(write_fd)
        os.set_inheritable(read_fd, True)
    path = f"/dev/fd/{read_fd}" if read_fd is not None else None
    env = dict(os.environ)
    env.pop("IPMI_PASSWORD", None)
    os.execvpe(IPMITOOL, bmc.argv(CONSOLE, path, interface="lanplus"), env)
