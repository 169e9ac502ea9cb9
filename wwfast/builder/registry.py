"""Pull an image from a container registry (or a local docker daemon) into an OCI image layout.

    wwfast image import docker://REGISTRY/NAME:TAG [NAME] [--platform linux/arm64] [--username U ...]
    wwfast image import docker-daemon:NAME:TAG [NAME]

The transfer is done by skopeo (Debian package `skopeo`), i.e. containers/image, the library podman
and buildah pull with. Why a tool rather than our own HTTP client: the registry protocol's corners
(bearer-token realms and scopes, basic auth, redirects to blob stores, schema 1/2 and OCI manifests,
manifest lists, the credential files `podman login` and `docker login` write, certificate
directories, the docker daemon's API) are what that library is maintained for, and it verifies each
blob against its digest as it arrives. We then check the layout ourselves (every blob against its
digest, the manifest chain, the platform asked for) and apply the layers with our own code
(whiteouts, path safety), as for any OCI layout.

Credentials: --username/--password are written to a private auth file in the import's temp
directory (never on a command line); otherwise skopeo reads $REGISTRY_AUTH_FILE,
${XDG_RUNTIME_DIR}/containers/auth.json, $XDG_CONFIG_HOME/containers/auth.json, then
~/.docker/config.json, or --authfile FILE.
"""
import base64
import ctypes
import dataclasses
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess

from wwfast.errors import UsageError

TRANSPORTS = ("docker://", "docker-daemon:")
OCI_TAG = "wwfast"
_CHUNK = 1 << 20
_PR_SET_PDEATHSIG = 1


class PullError(UsageError):
    """A pull failed; the message names the reference and what went wrong."""


@dataclasses.dataclass
class PullOptions:
    username: str = None
    password: str = None
    authfile: str = None
    platform: str = None     # OS/ARCH[/VARIANT], e.g. linux/arm64/v8
    cert_dir: str = None     # *.crt CA certificates (and client *.cert/*.key) for the registry
    tls_verify: bool = True


def is_remote(source):
    return isinstance(source, str) and source.startswith(TRANSPORTS)


def default_name(source):
    """The image name a reference gives when none is given: its last path component and tag."""
    ref = source.split("://", 1)[-1] if source.startswith("docker://") else source.split(":", 1)[1]
    ref = ref.split("@", 1)[0]
    last = ref.rsplit("/", 1)[-1]
    name, _, tag = last.partition(":")
    return f"{name}-{tag}" if tag and tag != "latest" else name


def parse_platform(text):
    parts = (text or "").split("/")
    if len(parts) not in (2, 3) or not all(re.fullmatch(r"[A-Za-z0-9_.-]+", p) for p in parts):
        raise PullError(f"--platform {text!r}: expected OS/ARCH[/VARIANT], e.g. linux/amd64 or linux/arm64/v8")
    return parts[0], parts[1], parts[2] if len(parts) == 3 else None


def registry_host(source):
    """host[:port] of a docker:// reference, or None when it names no registry (a short name)."""
    if not source.startswith("docker://"):
        return None
    first = source[len("docker://"):].split("/", 1)
    if len(first) == 2 and ("." in first[0] or ":" in first[0] or first[0] == "localhost"):
        return first[0]
    return None


def _auth_file(source, opts, workdir):
    host = registry_host(source)
    if host is None:
        raise PullError(f"{source}: --username needs the registry host in the reference "
                        f"(docker://HOST[:PORT]/NAME:TAG)")
    path = os.path.join(workdir, "auth.json")
    token = base64.b64encode(f"{opts.username}:{opts.password or ''}".encode()).decode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"auths": {host: {"auth": token}}}, f)
    return path


def skopeo_command(source, dest, opts, workdir):
    if shutil.which("skopeo") is None:
        raise PullError(f"{source}: skopeo is needed to pull images (apt-get install skopeo)")
    cmd = ["skopeo", "--tmpdir", workdir]
    if not os.path.exists("/etc/containers/policy.json"):   # no site trust policy: accept, as podman's default
        policy = os.path.join(workdir, "policy.json")
        with open(policy, "w") as f:
            json.dump({"default": [{"type": "insecureAcceptAnything"}]}, f)
        cmd += ["--policy", policy]
    if opts.platform:
        os_, arch, variant = parse_platform(opts.platform)
        cmd += ["--override-os", os_, "--override-arch", arch]
        if variant:
            cmd += ["--override-variant", variant]
    cmd += ["copy", "--quiet"]
    if opts.username:
        cmd += ["--src-authfile", _auth_file(source, opts, workdir)]
    elif opts.authfile:
        cmd += ["--src-authfile", opts.authfile]
    if source.startswith("docker-daemon:") and os.environ.get("DOCKER_HOST"):
        cmd += ["--src-daemon-host", os.environ["DOCKER_HOST"]]
    if source.startswith("docker://"):
        if opts.cert_dir:
            cmd += ["--src-cert-dir", opts.cert_dir]
        if not opts.tls_verify:
            cmd += ["--src-tls-verify=false"]
    return cmd + [source, f"oci:{dest}:{OCI_TAG}"]


def pull(source, dest, opts, workdir, log=print):
    """Copy `source` into the OCI layout `dest`, check it; returns facts for image.json."""
    cmd = skopeo_command(source, dest, opts, workdir)
    log(f"pulling {source}" + (f" ({opts.platform})" if opts.platform else ""))
    # skopeo dies with us: a kill -9 of wwfast never leaves it writing into a work tree.
    run = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)
    if run.returncode != 0:
        raise PullError(f"{source}: pull failed: {_skopeo_reason(run.stderr)}")
    return check_layout(dest, source, opts.platform)


def _die_with_parent():
    ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _skopeo_reason(stderr):
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    text = lines[-1] if lines else "skopeo failed without a message"
    text = re.sub(r'^time="[^"]*" level=\w+ msg="(.*)"$', r"\1", text).replace('\\"', '"')
    if re.search(r"unauthorized|authentication required|401", text, re.I):
        text += " (give --username/--password, --authfile, or log in with podman/docker login)"
    return text


# ---- checking what arrived ---------------------------------------------------------------------

def _blob(dest, digest, where):
    algo, _, hexd = (digest or "").partition(":")
    if algo != "sha256" or not re.fullmatch(r"[0-9a-f]{64}", hexd):
        raise PullError(f"{where}: unsupported digest {digest!r}")
    return os.path.join(dest, "blobs", "sha256", hexd)


def _json_blob(dest, desc, where):
    path = _blob(dest, desc.get("digest"), where)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise PullError(f"{where}: blob {desc.get('digest')} is missing") from None
    if "size" in desc and len(data) != desc["size"]:
        raise PullError(f"{where}: blob {desc['digest']} has {len(data)} bytes, the descriptor says {desc['size']}")
    try:
        return json.loads(data)
    except ValueError as e:
        raise PullError(f"{where}: blob {desc['digest']} is not valid JSON ({e})") from None


def verify_blobs(dest, source):
    """Every blob's sha256 against its name: nothing corrupt is ever imported."""
    blob_dir = os.path.join(dest, "blobs", "sha256")
    count = 0
    for name in sorted(os.listdir(blob_dir)):
        h = hashlib.sha256()
        with open(os.path.join(blob_dir, name), "rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
        if h.hexdigest() != name:
            raise PullError(f"{source}: blob sha256:{name} does not match its digest (got sha256:{h.hexdigest()})")
        count += 1
    return count


def check_layout(dest, source, platform=None):
    """Blobs against digests, index → manifest → config and layers present with their sizes, and the
    platform (when one was asked) is the image's. Returns {"platform", "manifest", "blobs"}."""
    blobs = verify_blobs(dest, source)
    with open(os.path.join(dest, "index.json"), "rb") as f:
        index = json.loads(f.read())
    manifests = index.get("manifests") or []
    if len(manifests) != 1:
        raise PullError(f"{source}: expected one image in the download, found {len(manifests)}")
    desc = manifests[0]
    manifest = _json_blob(dest, desc, source)
    if "manifests" in manifest:
        raise PullError(f"{source}: the download is still a list of images (use --platform OS/ARCH)")
    config = _json_blob(dest, manifest.get("config") or {}, f"{source} (config)")
    for layer in manifest.get("layers") or []:
        path = _blob(dest, layer.get("digest"), source)
        if not os.path.isfile(path) or os.path.getsize(path) != layer.get("size", os.path.getsize(path)):
            raise PullError(f"{source}: layer {layer.get('digest')} is missing or has the wrong size")
    found = "/".join(p for p in (config.get("os"), config.get("architecture"), config.get("variant")) if p)
    if platform:
        want = parse_platform(platform)
        have = (config.get("os"), config.get("architecture"), config.get("variant"))
        if have[:2] != want[:2] or (want[2] and have[2] != want[2]):
            raise PullError(f"{source}: the image is for {found or 'an unknown platform'}, not {platform}")
    return {"platform": found, "manifest": desc.get("digest"), "blobs": blobs}
