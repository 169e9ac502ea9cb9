"""A real 3-member etcd cluster (Debian's etcd-server), one member per host of a HostNet.

    with EtcdCluster(net, ["svc1", "svc2", "svc3"], work_dir) as etcd:
        etcd.endpoints               # ["http://198.18.0.1:2379", ...]
        etcd.kill("svc2")            # kill -9 that member
"""
import os
import signal
import subprocess
import time

CLIENT_PORT, PEER_PORT = 2379, 2380


class EtcdCluster:
    def __init__(self, net, hosts, work_dir):
        self.net, self.hosts, self.dir = net, list(hosts), work_dir
        self.procs = {}

    @property
    def endpoints(self):
        return [f"http://{self.net.address(h)}:{CLIENT_PORT}" for h in self.hosts]

    def start(self, timeout=60):
        cluster = ",".join(f"{h}=http://{self.net.address(h)}:{PEER_PORT}" for h in self.hosts)
        for h in self.hosts:
            addr = self.net.address(h)
            data = self.dir / f"etcd-{h}"
            data.mkdir(parents=True, exist_ok=True)
            args = self.net.exec_args(h) + [
                "etcd", "--name", h, "--data-dir", str(data),
                "--listen-client-urls", f"http://{addr}:{CLIENT_PORT}",
                "--advertise-client-urls", f"http://{addr}:{CLIENT_PORT}",
                "--listen-peer-urls", f"http://{addr}:{PEER_PORT}",
                "--initial-advertise-peer-urls", f"http://{addr}:{PEER_PORT}",
                "--initial-cluster", cluster, "--initial-cluster-state", "new",
                "--initial-cluster-token", self.net.tag, "--logger", "zap", "--log-outputs", "stderr"]
            log = open(self.dir / f"etcd-{h}.log", "wb")
            self.procs[h] = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                             start_new_session=True)
            log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for h, p in self.procs.items():
                if p.poll() is not None:
                    raise AssertionError(f"etcd on {h} exited: {self.log(h)[-2000:]}")
            out = subprocess.run(self.net.exec_args(self.hosts[0]) + [
                "etcdctl", "--endpoints", ",".join(self.endpoints), "--command-timeout=2s", "endpoint", "health"],
                capture_output=True, text=True, env=dict(os.environ, ETCDCTL_API="3"))
            if out.returncode == 0 and (out.stdout + out.stderr).count("is healthy") == len(self.hosts):
                return self
            time.sleep(0.3)
        raise AssertionError(f"etcd cluster not healthy: {out.stdout}{out.stderr}")

    def log(self, host):
        try:
            return (self.dir / f"etcd-{host}.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def kill(self, host):
        p = self.procs[host]
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.wait(10)

    def stop(self):
        for h in list(self.procs):
            self.kill(h)

    def __enter__(self):
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc):
        self.stop()
