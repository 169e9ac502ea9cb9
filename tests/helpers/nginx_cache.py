"""A real nginx cache host for tests: `wwfast configure cache` writes its file, nginx runs it.

    with NginxCache(work_dir, origins=["127.0.0.1:8000"], listen="127.0.0.1:0") as cache:
        cache.url            # http://127.0.0.1:PORT
        cache.access_log()   # parsed lines: (path, status, bytes, cache status)

`netns`: run nginx inside that network namespace (the proof's service hosts). The master's pid is kept,
so a test can kill -9 the master and its workers (`kill_all`) as a crash would.
"""
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]


def free_port(host="127.0.0.1"):
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def write_config(path, origins, listen, cache_dir, slice_size="1m", python=None, conf="/nonexistent"):
    args = [python or sys.executable, "-m", "wwfast.cli", "--conf", conf, "configure", "cache", "--listen", listen,
            "--cache-dir", str(cache_dir), "--output", str(path), "--user", "root", "--slice", slice_size]
    for origin in origins:
        args += ["--origin", origin]
    out = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise AssertionError(f"wwfast configure cache failed: {out.stdout}{out.stderr}")
    return path


class NginxCache:
    def __init__(self, work_dir, origins, host="127.0.0.1", port=None, slice_size="1m", netns=None):
        self.dir = pathlib.Path(work_dir)
        self.host = host
        self.port = port or free_port(host)
        self.origins = list(origins)
        self.slice_size = slice_size
        self.netns = netns
        self.conf_path = self.dir / "nginx.conf"
        self.cache_dir = self.dir / "cache"
        self.proc = None

    @property
    def url(self):
        return f"http://{self.host}:{self.port}"

    def _prefix(self):
        return ["ip", "netns", "exec", self.netns] if self.netns else []

    def start(self, timeout=20):
        self.dir.mkdir(parents=True, exist_ok=True)
        write_config(self.conf_path, self.origins, f"{self.host}:{self.port}", self.cache_dir, self.slice_size)
        test = subprocess.run(self._prefix() + ["nginx", "-t", "-q", "-c", str(self.conf_path)],
                              capture_output=True, text=True)
        if test.returncode != 0:
            raise AssertionError(f"nginx -t rejected the configuration: {test.stderr}")
        self.proc = subprocess.Popen(self._prefix() + ["nginx", "-c", str(self.conf_path), "-g", "daemon off;"],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=open(self.dir / "nginx.stderr", "wb"), start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"nginx exited: {self.error_log()}")
            if self._answers():
                return self
            time.sleep(0.1)
        raise AssertionError(f"nginx did not answer on {self.url}: {self.error_log()}")

    def _answers(self):
        args = self._prefix() + ["curl", "-sf", "-o", "/dev/null", "--max-time", "2",
                                 f"{self.url}/wwfast-cache/health"]
        return subprocess.run(args, capture_output=True).returncode == 0

    def error_log(self):
        parts = []
        for name in ("nginx.stderr", "cache/error.log"):
            try:
                parts.append((self.dir / name).read_text(errors="replace"))
            except FileNotFoundError:
                pass
        return "\n".join(parts)

    def pids(self):
        """The master and its workers (for a kill -9 of the whole cache, as a crash)."""
        pids = [self.proc.pid]
        out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(self.proc.pid)], capture_output=True, text=True)
        return pids + [int(p) for p in out.stdout.split()]

    def kill_all(self):
        for pid in self.pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def access_log(self):
        """[(path, status, bytes sent, cache status)] of every response; call after stop() (a graceful stop
        flushes the buffered log)."""
        assert self.proc is None or self.proc.poll() is not None, "stop() the cache before reading its log"
        rows = []
        try:
            text = (self.cache_dir / "access.log").read_text()
        except FileNotFoundError:
            return rows
        for line in text.splitlines():
            try:
                request = line.split('"')[1]
                status, sent, cache_status = line.split('"')[2].split()[:3]
                rows.append((request.split()[1], int(status), int(sent), cache_status))
            except (IndexError, ValueError):
                continue
        return rows

    def stop(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                self.kill_all()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass

    def __enter__(self):
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc):
        self.stop()
