"""A real container registry on loopback (Debian's docker-registry) and OCI images we make ourselves.

    reg = Registry(tmp_path / "reg", tls=True, users={"alice": "secret"})   # htpasswd (bcrypt) + a
    reg.start()                                                             # self-signed cert
    oci = make_oci_layout(tmp_path / "oci", {"latest": image_manifest(...)})
    reg.push(f"oci:{oci}:latest", "bb:1")                                   # skopeo copy
    ...
    reg.stop()

The registry writes its listen line to stderr once it serves; start() waits for that record (a
thread drains the pipe), with a generous backstop.

Registry(..., token_users={...}) puts the registry behind bearer tokens, as hosted registries do: a
TokenServer on loopback checks basic credentials and signs a JWT (RS256, its certificate in the
x5c header and in the registry's rootcertbundle) granting the scope asked; it records every
request (user, scope, granted) so a test can tell the token flow really ran.
"""
import base64
import gzip
import hashlib
import http.server
import io
import json
import os
import shutil
import socket
import subprocess
import tarfile
import threading
import time
import urllib.parse

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

MT = 1_600_000_000


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- OCI images -----------------------------------------------------------------------------------

def tar_layer(entries):
    """Gzipped tar bytes from [(name, bytes-or-None for a dir, mode)]."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data, mode in entries:
            ti = tarfile.TarInfo(name)
            ti.mode, ti.mtime = mode, MT
            if data is None:
                ti.type = tarfile.DIRTYPE
                tf.addfile(ti)
            else:
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))
    raw = buf.getvalue()
    return gzip.compress(raw, mtime=0), hashlib.sha256(raw).hexdigest()


def tree_layer(root):
    """A gzipped tar of a directory (owners numeric, as root made it)."""
    raw = subprocess.run(["tar", "--numeric-owner", "--sort=name", "-C", str(root), "-cf", "-", "."],
                         capture_output=True, check=True).stdout
    return gzip.compress(raw, mtime=0), hashlib.sha256(raw).hexdigest()


class Layout:
    """An OCI image layout being written: blobs, then index.json naming tags."""

    def __init__(self, root):
        self.root = str(root)
        os.makedirs(os.path.join(self.root, "blobs", "sha256"), exist_ok=True)
        with open(os.path.join(self.root, "oci-layout"), "w") as f:
            json.dump({"imageLayoutVersion": "1.0.0"}, f)
        self.tags = []

    def blob(self, data, media_type):
        digest = hashlib.sha256(data).hexdigest()
        with open(os.path.join(self.root, "blobs", "sha256", digest), "wb") as f:
            f.write(data)
        return {"mediaType": media_type, "digest": f"sha256:{digest}", "size": len(data)}

    def image(self, layers, arch="amd64", os_name="linux", variant=None):
        """layers: [(gzipped bytes, diff id)]; returns the manifest's descriptor (with its platform)."""
        config = {"architecture": arch, "os": os_name, "config": {"Cmd": ["/bin/sh"]},
                  "rootfs": {"type": "layers", "diff_ids": [f"sha256:{d}" for _, d in layers]}}
        if variant:
            config["variant"] = variant
        manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "config": self.blob(json.dumps(config).encode(), "application/vnd.oci.image.config.v1+json"),
                    "layers": [self.blob(data, "application/vnd.oci.image.layer.v1.tar+gzip") for data, _ in layers]}
        desc = self.blob(json.dumps(manifest).encode(), manifest["mediaType"])
        desc["platform"] = {"architecture": arch, "os": os_name, **({"variant": variant} if variant else {})}
        return desc

    def index(self, manifests):
        doc = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": manifests}
        return self.blob(json.dumps(doc).encode(), doc["mediaType"])

    def tag(self, name, desc):
        desc = dict(desc, annotations={"org.opencontainers.image.ref.name": name})
        desc.pop("platform", None)
        self.tags.append(desc)
        with open(os.path.join(self.root, "index.json"), "w") as f:
            json.dump({"schemaVersion": 2, "manifests": self.tags}, f)


# ---- a token server --------------------------------------------------------------------------------

def _b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenServer:
    """GET /token?service=S&scope=repository:NAME:ACTIONS with basic auth -> {"token": JWT}."""

    SERVICE, ISSUER = "wwfast-test-registry", "wwfast-test-issuer"

    def __init__(self, root, users):
        self.users = users
        self.requests = []
        key, self.cert = os.path.join(root, "token.key"), os.path.join(root, "token.crt")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", self.cert,
                        "-days", "2", "-subj", "/CN=wwfast-test-token-issuer"], check=True, capture_output=True)
        with open(key, "rb") as f:
            self.key = serialization.load_pem_private_key(f.read(), None)
        der = subprocess.run(["openssl", "x509", "-in", self.cert, "-outform", "DER"], check=True,
                             capture_output=True).stdout
        self.x5c = base64.b64encode(der).decode()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server.answer(self)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.realm = f"http://127.0.0.1:{self.httpd.server_address[1]}/token"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def _user(self, header):
        if not header or not header.startswith("Basic "):
            return None
        user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        return user if self.users.get(user) == password else False

    def answer(self, handler):
        query = urllib.parse.parse_qs(urllib.parse.urlparse(handler.path).query)
        user = self._user(handler.headers.get("Authorization"))
        scopes = [s for s in query.get("scope", []) if s.startswith("repository:")]
        self.requests.append({"user": user, "scopes": scopes, "service": query.get("service", [None])[0]})
        if user is False:
            handler.send_response(401)
            handler.end_headers()
            return
        access = []
        for scope in scopes if user else []:       # anonymous: a token that grants nothing
            _, name, actions = scope.split(":", 2)
            access.append({"type": "repository", "name": name, "actions": actions.split(",")})
        now = int(time.time())
        claims = {"iss": self.ISSUER, "sub": user or "", "aud": self.SERVICE, "exp": now + 300, "nbf": now - 10,
                  "iat": now, "jti": os.urandom(8).hex(), "access": access}
        head = {"typ": "JWT", "alg": "RS256", "x5c": [self.x5c]}
        signing_input = f"{_b64url(json.dumps(head).encode())}.{_b64url(json.dumps(claims).encode())}"
        signature = self.key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        token = f"{signing_input}.{_b64url(signature)}"
        body = json.dumps({"token": token, "access_token": token, "expires_in": 300}).encode()
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


# ---- the registry ---------------------------------------------------------------------------------

class Registry:
    def __init__(self, root, tls=False, users=None, token_users=None):
        self.root = str(root)
        self.tls = tls
        self.users = users or {}
        self.token_users = token_users or {}
        self.tokens = None
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        self.cert_dir = os.path.join(self.root, "certs")
        self.storage = os.path.join(self.root, "storage")
        self.proc = None
        self.log = []

    def _config(self):
        os.makedirs(self.storage, exist_ok=True)
        lines = ["version: 0.1", "log:", "  level: info", "storage:", "  filesystem:",
                 f"    rootdirectory: {self.storage}", "  delete:", "    enabled: true",
                 "http:", f"  addr: {self.host}"]
        if self.tls:
            os.makedirs(self.cert_dir, exist_ok=True)
            key, crt = os.path.join(self.root, "registry.key"), os.path.join(self.cert_dir, "registry.crt")
            subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                            "-nodes", "-keyout", key, "-out", crt, "-days", "2", "-subj", "/CN=127.0.0.1",
                            "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
            lines += ["  tls:", f"    certificate: {crt}", f"    key: {key}"]
        if self.users:
            htpasswd = os.path.join(self.root, "htpasswd")
            with open(htpasswd, "w") as f:
                for user, password in self.users.items():
                    f.write(subprocess.run(["htpasswd", "-Bbn", user, password], capture_output=True, text=True,
                                           check=True).stdout.strip() + "\n")
            lines += ["auth:", "  htpasswd:", "    realm: wwfast-test", f"    path: {htpasswd}"]
        if self.token_users:
            os.makedirs(self.root, exist_ok=True)
            self.tokens = TokenServer(self.root, self.token_users)
            lines += ["auth:", "  token:", f"    realm: {self.tokens.realm}", f"    service: {TokenServer.SERVICE}",
                      f"    issuer: {TokenServer.ISSUER}", f"    rootcertbundle: {self.tokens.cert}"]
        path = os.path.join(self.root, "config.yml")
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")
        return path

    def start(self, timeout=60, tries=3):
        for attempt in range(tries):
            config = self._config()
            self.log, ready = [], threading.Event()
            self.proc = subprocess.Popen(["docker-registry", "serve", config], stdin=subprocess.DEVNULL,
                                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            threading.Thread(target=self._drain, args=(self.proc, self.log, ready), daemon=True).start()
            if ready.wait(timeout) and self.proc.poll() is None:
                return self
            self.stop()
            if "address already in use" not in "".join(self.log) or attempt == tries - 1:
                raise AssertionError("docker-registry did not start:\n" + "".join(self.log))
            self.port = free_port()      # someone took the free port between our probe and its bind
            self.host = f"127.0.0.1:{self.port}"
        return self

    @staticmethod
    def _drain(proc, log, ready):
        for line in proc.stdout:
            log.append(line)
            if "listening on" in line:
                ready.set()
        ready.set()    # it exited: start() reports the log

    def stop(self):
        if self.tokens:
            self.tokens.stop()
            self.tokens = None
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def skopeo_tls(self, side):
        """skopeo options to reach this registry as source (side 'src') or destination ('dest')."""
        if self.tls:
            return [f"--{side}-cert-dir", self.cert_dir]
        return [f"--{side}-tls-verify=false"]

    def push(self, source, repo_tag, all_platforms=False):
        creds = []
        if self.users or self.token_users:
            user, password = next(iter((self.users or self.token_users).items()))
            creds = ["--dest-creds", f"{user}:{password}"]
        cmd = ["skopeo", "copy", "--quiet", *(["--all"] if all_platforms else []), *creds,
               *self.skopeo_tls("dest"), source, f"docker://{self.host}/{repo_tag}"]
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, f"skopeo push failed: {run.stderr}"

    def blob_path(self, digest):
        hexd = digest.split(":", 1)[1]
        return os.path.join(self.storage, "docker", "registry", "v2", "blobs", "sha256", hexd[:2], hexd, "data")

    def remove(self):
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
