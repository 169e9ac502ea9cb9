"""CPU seconds and peak memory of a server and everything it forks, for the benchmarks.

A server is started inside its own control group (`ProcessGroup.preexec`), so its CPU time is
the group's counter, children included: in.tftpd forks a process per transfer and reaps it itself,
so neither rusage nor /proc of the parent would show that CPU. cgroup v2 (cpu.stat usage_usec) is
used where it is mounted, else v1 cpuacct; without either (no root) the group falls back to
/proc of the pids it knows (children reaped by others are then missed, and the result says so).
Peak RSS: the larger of the sum of VmHWM of the group's processes (long-lived servers: nginx
master + workers, serve's workers) and the largest sum of VmRSS a sampler thread saw (short-lived
children such as in.tftpd's).
"""
import os
import threading
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _cgroup_root():
    for path, kind in (("/sys/fs/cgroup", "v2"), ("/sys/fs/cgroup/unified", "v2"), ("/sys/fs/cgroup/cpuacct", "v1")):
        marker = "cgroup.controllers" if kind == "v2" else "cpuacct.usage"
        if os.path.exists(os.path.join(path, marker)) and os.access(path, os.W_OK):
            if kind == "v2" and not os.path.exists(os.path.join(path, "cpu.stat")) and path == "/sys/fs/cgroup":
                continue
            return path, kind
    return None, None


def proc_cpu_seconds(pid, children=True):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = int(fields[11]) + int(fields[12]) + ((int(fields[13]) + int(fields[14])) if children else 0)
    return ticks / CLK_TCK


def _status_kb(pid, key):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class ProcessGroup:
    """Use `preexec` as Popen(preexec_fn=...) for every process of one server; then read its counters."""

    def __init__(self, name):
        self.name = name
        root, self.kind = _cgroup_root()
        self.path = None
        self.roots = []
        if root is not None:
            self.path = os.path.join(root, f"wwfast-bench-{name}-{os.getpid()}")
            os.makedirs(self.path, exist_ok=True)
        self._peak_kb = 0
        self._sampling = None

    def preexec(self):
        """Runs in the child before exec: join the group, so everything it forks counts too."""
        if self.path is not None:
            with open(os.path.join(self.path, "cgroup.procs"), "w") as f:
                f.write(str(os.getpid()))

    def adopt(self, pid):
        self.roots.append(pid)

    def pids(self):
        if self.path is not None:
            try:
                with open(os.path.join(self.path, "cgroup.procs")) as f:
                    return [int(p) for p in f.read().split()]
            except OSError:
                return []
        out = []
        for pid in self.roots:
            out.append(pid)
            try:
                with open(f"/proc/{pid}/task/{pid}/children") as f:
                    out += [int(c) for c in f.read().split()]
            except OSError:
                pass
        return out

    @property
    def exact(self):
        return self.path is not None

    def cpu_seconds(self):
        if self.kind == "v2":
            with open(os.path.join(self.path, "cpu.stat")) as f:
                for line in f:
                    if line.startswith("usage_usec"):
                        return int(line.split()[1]) / 1e6
        if self.kind == "v1":
            with open(os.path.join(self.path, "cpuacct.usage")) as f:
                return int(f.read()) / 1e9
        return sum(proc_cpu_seconds(p) for p in self.pids())

    # -- memory ---------------------------------------------------------------------------------
    def start_sampling(self, period=0.05):
        self._peak_kb = 0
        for pid in self.pids():               # VmHWM from now on
            try:
                with open(f"/proc/{pid}/clear_refs", "w") as f:
                    f.write("5")
            except OSError:
                pass
        stop = threading.Event()

        def sample():
            while not stop.wait(period):
                self._peak_kb = max(self._peak_kb, sum(_status_kb(p, "VmRSS:") for p in self.pids()))
        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        self._sampling = (stop, thread)

    def peak_rss_mb(self):
        """Stop sampling; the peak resident memory of the group since start_sampling, MB."""
        if self._sampling:
            stop, thread = self._sampling
            stop.set()
            thread.join()
            self._sampling = None
        hwm = sum(_status_kb(p, "VmHWM:") for p in self.pids())
        return max(hwm, self._peak_kb) / 1024

    def close(self):
        if self.path is not None:
            for _ in range(300):
                try:
                    os.rmdir(self.path)
                    return
                except OSError:
                    time.sleep(0.1)     # the last processes (nginx workers) are still exiting
