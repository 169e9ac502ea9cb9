"""Drive a whole wwfast cluster from the outside, as a user does: stages as processes, serve as a process.

Used by the QEMU end-to-end tests and by `make demo` (scripts/demo.py). Every stage runs as
`python -m stages.X --conf CONF --state STATE` from the project root; serve runs until stop() (SIGTERM,
then SIGKILL), optionally inside a network namespace. Its log is kept for failure messages.
"""
import json
import os
import pathlib
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parents[2]
PUBLISH_STAGES = ("define", "build", "compress")


class StageFailed(AssertionError):
    pass


class Cluster:
    def __init__(self, conf, state, http_host="127.0.0.1", http_port=9873, python=None, netns=None, env=None):
        self.conf = pathlib.Path(conf)
        self.state = pathlib.Path(state)
        self.http_host = http_host
        self.http_port = http_port
        self.python = python or sys.executable
        self.netns = netns
        self.env = dict(os.environ, WWFAST_CONF=str(self.conf), WWFAST_STATE=str(self.state), **(env or {}))
        self.serve_proc = None
        self.serve_log = self.state / "serve.log"

    # -- stages ---------------------------------------------------------------------------------
    def run(self, args, what, timeout=300):
        out = subprocess.run(args, cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=timeout)
        if out.returncode != 0:
            raise StageFailed(f"{what} failed (exit {out.returncode}):\n{out.stdout}\n{out.stderr}")
        return out.stdout + out.stderr

    def stage(self, name, *extra):
        return self.run([self.python, "-m", f"stages.{name}", "--conf", str(self.conf), "--state", str(self.state),
                         *extra], f"stage {name}")

    def wwfast(self, *args):
        return self.run([self.python, "-m", "wwfast.cli", *args], "wwfast " + " ".join(args))

    def import_image(self, tree, name):
        """`wwfast image import` (with --update when the image exists: a re-import is a new version)."""
        update = ["--update"] if (self.state / "images" / name).exists() else []
        return self.wwfast("image", "import", *update, str(tree), name)

    def publish(self):
        """define, build, compress: the manifest is the commit point. Returns the stages' output."""
        return "".join(self.stage(name) for name in PUBLISH_STAGES)

    def manifest(self):
        return json.loads((self.state / "publish" / "manifest.json").read_text())

    # -- serve ------------------------------------------------------------------------------------
    def start_serve(self, *extra, timeout=30):
        self.state.mkdir(parents=True, exist_ok=True)
        args = [self.python, "-m", "stages.serve", "--conf", str(self.conf), "--state", str(self.state), *extra]
        if self.netns:
            args = ["ip", "netns", "exec", self.netns] + args
        log = open(self.serve_log, "ab")
        try:
            self.serve_proc = subprocess.Popen(args, cwd=ROOT, env=self.env, stdin=subprocess.DEVNULL, stdout=log,
                                               stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.serve_proc.poll() is not None:
                raise StageFailed(f"serve exited with {self.serve_proc.returncode}:\n{self.serve_output()}")
            try:
                code, _ = self.get("/healthz", timeout=2)
                if code == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.2)
        self.stop_serve()
        raise StageFailed(f"serve did not answer /healthz within {timeout}s:\n{self.serve_output()}")

    def stop_serve(self):
        proc, self.serve_proc = self.serve_proc, None
        if proc is None or proc.poll() is not None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(proc.pid, sig)
                proc.wait(10)
                return
            except ProcessLookupError:
                return
            except subprocess.TimeoutExpired:
                continue

    def serve_output(self):
        try:
            return self.serve_log.read_text(errors="replace")[-6000:]
        except FileNotFoundError:
            return ""

    # -- HTTP from the host side ------------------------------------------------------------------
    def get(self, path, timeout=5):
        """(status code, body bytes) of GET http://HOST:PORT/path (through curl inside the netns if any)."""
        url = f"http://{self.http_host}:{self.http_port}{path}"
        if self.netns:
            out = subprocess.run(["ip", "netns", "exec", self.netns, "curl", "-s", "-m", str(timeout),
                                  "-o", "-", "-w", "\n%{http_code}", url], capture_output=True, timeout=timeout + 5)
            if out.returncode != 0:
                raise OSError(f"curl {url}: exit {out.returncode}")
            body, _, code = out.stdout.rpartition(b"\n")
            return int(code), body
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def status(self):
        code, body = self.get("/status")
        assert code == 200, (code, body)
        return json.loads(body)

    def boot_record(self, node_id):
        """The node's /status?node=ID document: its status and boot records ("boot", "last boot")."""
        code, body = self.get(f"/status?node={node_id}")
        assert code == 200, (node_id, code, body)
        return json.loads(body)

    def metrics(self):
        """{'name{labels}': value} of the Prometheus text at /metrics."""
        code, body = self.get("/metrics")
        assert code == 200, (code, body)
        values = {}
        for line in body.decode().splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                values[key] = float(value)
        return values

    def bytes_served(self):
        return int(sum(v for k, v in self.metrics().items() if k.split("{")[0].endswith("_bytes_total")
                       and ("sent" in k or "tftp" in k)))


def boot_of(record, since=0.0):
    """The node's boot (a boot record dict) that started at or after `since` (time.time()), or None."""
    for key in ("boot", "last boot"):
        boot = record.get(key)
        if boot and boot["start"] >= since:
            return boot
    return None


def booted_requests(boot):
    """The successful requests of a boot, from its first one up to its first whole runtime overlay
    (what the node agent fetches later is left out)."""
    out = []
    for r in (boot or {}).get("requests", []):
        if r["result"] != "ok" or r["method"] != "GET" or r["code"] not in (200, 206):
            continue
        out.append(r)
        if r["stage"] == "runtime" and r["code"] == 200:
            break
    return out
