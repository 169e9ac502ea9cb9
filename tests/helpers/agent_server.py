"""A stand-in for the serve stage's /runtime route (tests of the node agent), and a runner that serves
an archive and runs the agent once, for use inside a private network namespace (`unshare -n`):

    unshare -n python -m helpers.agent_server ARCHIVE WORKDIR PATH_ENV AGENT_SECURE   (prints JSON)
That server is in secure mode (source ports >= 1024 refused, like the serve stage); AGENT_SECURE (1/0)
says whether the agent is told so.
"""
import gzip
import http.server
import json
import pathlib
import subprocess
import sys
import threading

from wwfast.builder.overlays import BUILTIN_DIR

AGENT = BUILTIN_DIR / "wwinit" / "wwinit" / "wwfast-agent"
BUSYBOX = "/bin/busybox"
MAC = "52:54:00:00:00:01"


class RuntimeServer:
    """Answers GET /runtime/<MAC> with a gzip'd archive; records each request's source port."""

    def __init__(self, payload, secure=False, ssl_context=None):
        self.payload, self.secure, self.requests = payload, secure, []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                port = self.client_address[1]
                server.requests.append((self.path, port))
                if not self.path.startswith(f"/runtime/{MAC}?"):
                    return self.send_error(404, "unknown node")
                if server.secure and port >= 1024:
                    return self.send_error(403, "runtime overlay needs a source port below 1024")
                body = gzip.compress(server.payload)
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        if ssl_context is not None:  # HTTPS, as serve with `warewulf: tls: true`
            self.httpd.socket = ssl_context.wrap_socket(self.httpd.socket, server_side=True)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def run_agent(workdir, port, secure, path_env, *args, timeout=60, tls_cert=None):
    """Run the agent with busybox sh against 127.0.0.1:port; returns (CompletedProcess, root dir).
    `tls_cert`: the agent fetches over HTTPS from that port, trusting this certificate file."""
    workdir = pathlib.Path(workdir)
    root = workdir / "root"
    (root / "etc").mkdir(parents=True, exist_ok=True)
    config = workdir / "config"
    config.write_text(f"WWSERVER=127.0.0.1\nWWPORT={port}\nWWSECURE={1 if secure else 0}\nWWINTERVAL=1\n"
                      f"WWMAC={MAC}\n" + (f"WWTLS=1\nWWTLSPORT={port}\n" if tls_cert else ""))
    env = {"PATH": path_env, "WWFAST_ROOT": str(root), "WWFAST_CONFIG": str(config)}
    if tls_cert:
        env["WWFAST_CACERT"] = str(tls_cert)
    proc = subprocess.run([BUSYBOX, "sh", str(AGENT), *args], env=env, capture_output=True, text=True,
                          timeout=timeout)
    return proc, root


def main(argv):
    archive, workdir, path_env, agent_secure = argv[1], argv[2], argv[3], argv[4] == "1"
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    range_file = "/proc/sys/net/ipv4/ip_local_port_range"
    range_before = open(range_file).read()
    with RuntimeServer(pathlib.Path(archive).read_bytes(), secure=True) as server:
        proc, root = run_agent(workdir, server.port, agent_secure, path_env, "--once")
    print(json.dumps({"rc": proc.returncode, "out": proc.stdout, "err": proc.stderr, "ports": [
        p for _, p in server.requests], "range_restored": open(range_file).read() == range_before}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
