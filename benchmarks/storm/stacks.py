"""The two server stacks a storm runs against, on the same address and ports in a server namespace.

- `WwfastStack`: `python -m stages.serve` (HTTP and TFTP in one command, `--workers N` when serve has
  it), reading the published state; its own view of the storm is /status.
- `ClassicStack`: what an admin builds from Debian packages: tftp-hpa's `in.tftpd` (standalone, a
  forked process per transfer) for the iPXE binary and nginx (sendfile, a worker per core, access log
  buffered) for the rest, serving the very same store files through a document root of hard links
  laid out like the wwfast URLs (`/ipxe/<mac>`, `/kernel/<mac>`, ... `/runtime/<mac>`, with
  `?compress=gz` picking the gzip runtime overlay as the node agent asks). Its own view of the storm
  is the access log.
Each stack runs in its own control group (benchmarks/accounting.py) for CPU seconds and peak RSS.
"""
import os
import pathlib
import resource
import shutil
import signal
import subprocess
import sys
import time

from accounting import ProcessGroup

from .cluster import HTTP_PORT, ROOT, TFTP_PORT

NOFILE = resource.getrlimit(resource.RLIMIT_NOFILE)[1]     # the hard limit: each connection holds fds


class Stack:
    name = "?"

    def __init__(self, topo, server_index, work):
        self.topo, self.ns = topo, topo.server_ns(server_index)
        self.address = topo.server_addresses(server_index)[0]
        self.work = pathlib.Path(work)
        self.procs = []
        self.group = None

    def _spawn(self, args, log_name, cwd=ROOT):
        log = open(self.work / log_name, "ab")
        try:
            proc = subprocess.Popen(self.topo.exec_args(self.ns) + ["prlimit", f"--nofile={NOFILE}:{NOFILE}"] + args,
                                    cwd=cwd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    preexec_fn=self.group.preexec, start_new_session=True)
        finally:
            log.close()
        self.group.adopt(proc.pid)
        self.procs.append(proc)
        return proc

    def curl(self, url, output="/dev/null", timeout=3):
        """curl inside the server namespace; returns (exit code, http code)."""
        out = subprocess.run(self.topo.exec_args(self.ns) + ["curl", "-s", "-m", str(timeout), "-o", output,
                                                             "-w", "%{http_code}", url],
                             capture_output=True, text=True)
        return out.returncode, out.stdout.strip()

    def wait_ready(self, probe_path, nbp, timeout=300):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for proc in self.procs:
                if proc.poll() is not None:
                    raise SystemExit(f"{self.name}: {proc.args[-1]} exited ({proc.returncode}); see {self.work}")
            http = self.curl(f"http://{self.address}:{HTTP_PORT}{probe_path}")
            tftp = self.curl(f"tftp://{self.address}:{TFTP_PORT}/{nbp}")
            if http == (0, "200") and tftp[0] == 0:
                return
            time.sleep(0.2)
        raise SystemExit(f"{self.name}: not ready after {timeout} s (see logs in {self.work})")

    def start(self):
        self.group = ProcessGroup(self.name)
        self._start()
        return self

    def stop(self):
        for proc in self.procs:
            try:
                os.killpg(proc.pid, self.stop_signal)
            except ProcessLookupError:
                pass
        for proc in self.procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.procs.clear()
        if self.group is not None:
            self.group.close()
            self.group = None

    stop_signal = signal.SIGTERM

    def versions(self):
        return {}


class WwfastStack(Stack):
    """wwfast serve of this checkout, or of `tree` (another checkout with its .venv: the baseline stack)."""

    def __init__(self, topo, server_index, work, conf, state, tftp_root, workers=None, tree=None):
        super().__init__(topo, server_index, work)
        self.conf, self.state, self.tftp_root, self.workers = conf, state, tftp_root, workers
        self.tree = pathlib.Path(tree) if tree else ROOT
        self.python = str(self.tree / ".venv" / "bin" / "python") if tree else sys.executable
        self.name = "baseline" if tree else "wwfast" if not workers else f"wwfast-{workers}w"

    @staticmethod
    def supports_workers():
        out = subprocess.run([sys.executable, "-m", "stages.serve", "--help"], cwd=ROOT, capture_output=True, text=True)
        return "--workers" in out.stdout

    def _start(self):
        args = [self.python, "-m", "stages.serve", "--conf", str(self.conf), "--state", str(self.state),
                "--bind", self.address, "--http-port", str(HTTP_PORT), "--tftp-port", str(TFTP_PORT),
                "--tftp-root", str(self.tftp_root), "--quiet"]
        if self.workers:
            args += ["--workers", str(self.workers)]
        self._spawn(args, f"{self.name}.log", cwd=self.tree)

    def serve_counters(self, out_path):
        """serve's own counts since it started (/metrics): its TFTP session table's (timer retransmits,
        re-ACK resends, ...) and, with workers, who chose the catalog of each node request ("pin_worker":
        the worker alone, "pin_supervisor": asked, waiting)."""
        code, status = self.curl(f"http://{self.address}:{HTTP_PORT}/metrics", output=str(out_path), timeout=10)
        if code or status != "200":
            return {}
        counters = {}
        with open(out_path) as f:
            for line in f:
                for prefix, name in (('wwfast_tftp_transfer_events_total{event="', "{}"),
                                     ('wwfast_boot_pin_answers_total{by="', "pin_{}")):
                    if line.startswith(prefix):
                        counters[name.format(line[len(prefix):].split('"')[0])] = int(float(line.split()[-1]))
        return counters

    def versions(self):
        out = subprocess.run(["git", "-C", str(self.tree), "describe", "--always", "--dirty"], capture_output=True,
                             text=True)
        return {self.name: out.stdout.strip()}


NGINX_CONF = """
user root;
worker_processes auto;
worker_rlimit_nofile {nofile};
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections {connections}; }}
http {{
    sendfile on;
    tcp_nopush on;
    keepalive_requests 10000;
    default_type application/octet-stream;
    log_format storm '$remote_addr $remote_port $msec $request_time $status $body_bytes_sent $request_uri';
    access_log {prefix}/access.log storm buffer=256k flush=1s;
    client_body_temp_path {prefix}/tmp;
    proxy_temp_path {prefix}/tmp;
    fastcgi_temp_path {prefix}/tmp;
    uwsgi_temp_path {prefix}/tmp;
    scgi_temp_path {prefix}/tmp;
    map $arg_compress $runtime_dir {{ gz runtime-gz; default runtime; }}
    server {{
        listen {address}:{port} backlog=65535 reuseport;
        root {docroot};
        location /runtime/ {{ rewrite ^/runtime/(.*)$ /$runtime_dir/$1 break; }}
    }}
}}
"""


class ClassicStack(Stack):
    name = "classic"
    stop_signal = signal.SIGTERM

    def __init__(self, topo, server_index, work, manifest, store, tftp_root):
        super().__init__(topo, server_index, work)
        self.tftp_root = tftp_root
        self.prefix = self.work / "nginx"
        self.docroot = self.work / "docroot"
        self._lay_out(manifest, store)

    def _lay_out(self, manifest, store):
        """The document root: /<stage>/<mac> hard links to the store files wwfast serves."""
        shutil.rmtree(self.docroot, ignore_errors=True)
        routes = {"ipxe": ("ipxe", "raw"), "kernel": ("kernel", "raw"), "image": ("image", "zst"),
                  "system": ("system", "zst"), "runtime": ("runtime", "zst"), "runtime-gz": ("runtime", "gz")}
        for directory in routes:
            (self.docroot / directory).mkdir(parents=True)
        for node in manifest.nodes.values():
            for mac in node.macs:
                for directory, (stage, encoding) in routes.items():
                    entry = node.artifacts.get(stage, {}).get(encoding)
                    if entry is None:
                        continue
                    name = mac.replace(":", "-") if stage == "ipxe" else mac
                    os.link(os.path.join(store, entry.file), self.docroot / directory / name)
        (self.prefix / "tmp").mkdir(parents=True, exist_ok=True)
        (self.prefix / "nginx.conf").write_text(NGINX_CONF.format(
            nofile=NOFILE, connections=NOFILE // 2, prefix=self.prefix, address=self.address, port=HTTP_PORT, docroot=self.docroot))

    def _start(self):
        log = self.prefix / "access.log"
        log.unlink(missing_ok=True)
        # -L: standalone in the foreground, a forked child per transfer; -u root: no drop (the
        # namespace is private); --retransmit stays at its 1 s default
        self._spawn(["in.tftpd", "-L", "-a", f"{self.address}:{TFTP_PORT}", "-s", str(self.tftp_root), "-u", "root"],
                    "in.tftpd.log")
        self._spawn(["nginx", "-p", str(self.prefix), "-c", str(self.prefix / "nginx.conf"), "-g", "daemon off;"],
                    "nginx.log")

    def access_log(self):
        path = self.prefix / "access.log"
        return path.read_text().splitlines() if path.exists() else []

    def versions(self):
        nginx = subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip().split("/")[-1]
        tftpd = subprocess.run(["in.tftpd", "-V"], capture_output=True, text=True)
        return {"nginx": nginx, "tftp-hpa": (tftpd.stdout + tftpd.stderr).split(",")[0].split()[-1]}
