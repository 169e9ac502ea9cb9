"""`wwfast image import docker://…` against a real registry (Debian's docker-registry on loopback),
images we build ourselves pushed by skopeo: plain, multi-platform, TLS + htpasswd auth with every
way of giving credentials, and a blob tampered in the registry's storage refused."""
import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys

import pytest

from helpers.busybox_tree import make_busybox_tree
from helpers.qemu import boot_until
from helpers.processes import descendants as _descendants, wait_gone as _wait_gone
from helpers.registry import Layout, Registry, tar_layer, tree_layer
from helpers.trees import snapshot
from wwfast import layout
from wwfast.builder import registry

pytestmark = pytest.mark.skipif(not (shutil.which("docker-registry") and shutil.which("skopeo")),
                                reason="docker-registry and skopeo are needed (scripts/setup.sh installs them)")

USER, PASSWORD = "alice", "s3cret-pw"


@pytest.fixture(scope="session")
def oci(tmp_path_factory):
    """One OCI layout: bb:latest (busybox tree + a layer with a whiteout), bb:multi (amd64 + arm64/v8
    index), bb:tamper (its own layer, to be corrupted in the registry)."""
    tmp = tmp_path_factory.mktemp("oci")
    tree = make_busybox_tree(tmp / "tree", marker="amd64 image")
    (tree / "etc" / "gone").write_text("deleted by the next layer\n")
    base = tree_layer(tree)
    top = tar_layer([("etc", None, 0o755), ("etc/.wh.gone", b"", 0o644), ("etc/layer2", b"second layer\n", 0o644)])
    arm = tar_layer([("etc", None, 0o755), ("etc/marker", b"arm64 image\n", 0o644)])
    lay = Layout(tmp / "layout")
    amd64 = lay.image([base, top])
    lay.tag("latest", amd64)
    lay.tag("multi", lay.index([amd64, lay.image([base, arm], arch="arm64", variant="v8")]))
    lay.tag("tamper", lay.image([tar_layer([("etc", None, 0o755), ("etc/marker", b"tamper\n", 0o644)])]))
    return lay.root


@pytest.fixture(scope="session")
def plain(oci, tmp_path_factory):
    reg = Registry(tmp_path_factory.mktemp("plain")).start()
    try:
        reg.push(f"oci:{oci}:latest", "bb:1")
        reg.push(f"oci:{oci}:multi", "bb:multi", all_platforms=True)
        reg.push(f"oci:{oci}:tamper", "bb:tamper")
        yield reg
    finally:
        reg.stop()


@pytest.fixture(scope="session")
def secured(oci, tmp_path_factory):
    reg = Registry(tmp_path_factory.mktemp("secured"), tls=True, users={USER: PASSWORD}).start()
    try:
        reg.push(f"oci:{oci}:latest", "site/bb:1")
        yield reg
    finally:
        reg.stop()


@pytest.fixture(scope="session")
def tokened(oci, tmp_path_factory):
    reg = Registry(tmp_path_factory.mktemp("tokened"), token_users={USER: PASSWORD}).start()
    try:
        reg.push(f"oci:{oci}:latest", "site/bb:1")
        yield reg
    finally:
        reg.stop()


def wwfast(state, *args, env=None, **kw):
    env = dict(os.environ if env is None else env)
    return subprocess.run([sys.executable, "-m", "wwfast.cli", "--state", str(state), "image", "import", *args],
                          capture_output=True, text=True, timeout=300, env=env, **kw)


def info(state, name):
    with open(layout.image_info(state, name)) as f:
        return json.load(f)


def read(state, name, rel):
    with open(os.path.join(layout.image_root(state, name), rel)) as f:
        return f.read()


def leftovers(state):
    store = layout.images_dir(state)
    return [n for n in os.listdir(store) if ".work-" in n] if os.path.isdir(store) else []


def test_pull_applies_layers_with_whiteouts(plain, tmp_path):
    state = tmp_path / "state"
    run = wwfast(state, f"docker://{plain.host}/bb:1", "--tls-verify=false")
    assert run.returncode == 0, run.stderr
    assert read(state, "bb-1", "etc/marker") == "amd64 image\n"
    assert read(state, "bb-1", "etc/layer2") == "second layer\n"
    root = layout.image_root(state, "bb-1")
    assert not os.path.lexists(os.path.join(root, "etc/gone"))
    assert os.path.samefile(os.path.join(root, "bin/sh"), os.path.join(root, "bin/busybox"))   # hard link kept
    doc = info(state, "bb-1")
    assert doc["kind"] == "registry" and doc["source"] == f"docker://{plain.host}/bb:1"
    assert doc["platform"] == "linux/amd64" and doc["layers"] == 2 and doc["manifest"].startswith("sha256:")
    assert leftovers(state) == []
    assert os.listdir(layout.image_dir(state, "bb-1")) == ["rootfs", "image.json"] or \
        sorted(os.listdir(layout.image_dir(state, "bb-1"))) == ["image.json", "rootfs"]


def test_platform_picks_from_an_index(plain, tmp_path):
    state = tmp_path / "state"
    ref = f"docker://{plain.host}/bb:multi"
    run = wwfast(state, ref, "arm", "--platform", "linux/arm64/v8", "--tls-verify=false")
    assert run.returncode == 0, run.stderr
    assert read(state, "arm", "etc/marker") == "arm64 image\n"
    assert info(state, "arm")["platform"] == "linux/arm64/v8"
    run = wwfast(state, ref, "host", "--tls-verify=false")
    assert run.returncode == 0, run.stderr
    assert read(state, "host", "etc/marker") == "amd64 image\n"
    run = wwfast(state, ref, "s390", "--platform", "linux/s390x", "--tls-verify=false")
    assert run.returncode == 1 and "pull failed" in run.stderr and "s390x" in run.stderr
    assert not os.path.exists(layout.image_dir(state, "s390")) and leftovers(state) == []
    bad = wwfast(state, ref, "x", "--platform", "arm64")
    assert bad.returncode == 1 and "OS/ARCH" in bad.stderr


def test_tampered_blob_is_refused_and_the_old_image_stays(plain, oci, tmp_path):
    state = tmp_path / "state"
    assert wwfast(state, f"docker://{plain.host}/bb:1", "victim", "--tls-verify=false").returncode == 0
    before = snapshot(layout.image_root(state, "victim")), info(state, "victim")
    with open(os.path.join(oci, "index.json")) as f:
        tamper = next(m for m in json.load(f)["manifests"]
                      if m["annotations"]["org.opencontainers.image.ref.name"] == "tamper")
    with open(os.path.join(oci, "blobs", "sha256", tamper["digest"].split(":")[1])) as f:
        layer = json.load(f)["layers"][0]["digest"]
    blob = plain.blob_path(layer)
    data = bytearray(open(blob, "rb").read())
    data[len(data) // 2] ^= 0xFF          # same size, one byte off: only the digest can tell
    with open(blob, "wb") as f:
        f.write(data)
    run = wwfast(state, f"docker://{plain.host}/bb:tamper", "victim", "--update", "--tls-verify=false")
    assert run.returncode == 1
    assert "digest" in run.stderr.lower(), run.stderr
    assert (snapshot(layout.image_root(state, "victim")), info(state, "victim")) == before
    assert leftovers(state) == []


def test_auth_with_flags_files_and_stdin(secured, tmp_path):
    state = tmp_path / "state"
    ref = f"docker://{secured.host}/site/bb:1"
    certs = ["--cert-dir", secured.cert_dir]
    env = {k: v for k, v in os.environ.items() if k not in ("XDG_RUNTIME_DIR", "REGISTRY_AUTH_FILE")}
    env["HOME"] = str(tmp_path / "home")     # no credentials anywhere yet

    run = wwfast(state, ref, "anon", *certs, env=env)
    assert run.returncode == 1 and "--username" in run.stderr, run.stderr
    run = wwfast(state, ref, "wrong", *certs, "--username", USER, "--password", "nope", env=env)
    assert run.returncode == 1 and "pull failed" in run.stderr
    run = wwfast(state, ref, "untrusted", "--username", USER, "--password", PASSWORD, env=env)
    assert run.returncode == 1 and "certificate" in run.stderr, run.stderr
    assert sorted(os.listdir(layout.images_dir(state))) == sorted(
        n for n in os.listdir(layout.images_dir(state)) if n.startswith("."))   # no image, only locks
    assert leftovers(state) == []

    run = wwfast(state, ref, "flags", *certs, "--username", USER, "--password", PASSWORD, env=env)
    assert run.returncode == 0, run.stderr
    run = wwfast(state, ref, "stdin", *certs, "--username", USER, env=env, input=PASSWORD + "\n")
    assert run.returncode == 0, run.stderr

    entry = {"auths": {secured.host: {"auth": base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()}}}
    podman = tmp_path / "xdg" / "containers"
    podman.mkdir(parents=True)
    (podman / "auth.json").write_text(json.dumps(entry))
    run = wwfast(state, ref, "podman-file", *certs, env=dict(env, XDG_RUNTIME_DIR=str(tmp_path / "xdg")))
    assert run.returncode == 0, run.stderr
    docker = tmp_path / "home" / ".docker"
    docker.mkdir(parents=True)
    (docker / "config.json").write_text(json.dumps(entry))
    run = wwfast(state, ref, "docker-file", *certs, env=env)
    assert run.returncode == 0, run.stderr
    for name in ("flags", "stdin", "podman-file", "docker-file"):
        assert read(state, name, "etc/marker") == "amd64 image\n"


def test_bearer_token_auth(tokened, tmp_path):
    """The registry answers 401 with a Bearer realm; the token server checks the password and grants
    the scope; the record shows the pull went through it as alice asking to pull site/bb."""
    state = tmp_path / "state"
    ref = f"docker://{tokened.host}/site/bb:1"
    env = {k: v for k, v in os.environ.items() if k not in ("XDG_RUNTIME_DIR", "REGISTRY_AUTH_FILE")}
    env["HOME"] = str(tmp_path / "home")
    seen = len(tokened.tokens.requests)
    anon = wwfast(state, ref, "anon", "--tls-verify=false", env=env)
    assert anon.returncode == 1 and "--username" in anon.stderr, anon.stderr
    wrong = wwfast(state, ref, "wrong", "--tls-verify=false", "--username", USER, "--password", "nope", env=env)
    assert wrong.returncode == 1
    run = wwfast(state, ref, "tok", "--tls-verify=false", "--username", USER, "--password", PASSWORD, env=env)
    assert run.returncode == 0, run.stderr
    assert read(state, "tok", "etc/marker") == "amd64 image\n"
    asked = tokened.tokens.requests[seen:]
    assert {"user": None, "scopes": ["repository:site/bb:pull"], "service": "wwfast-test-registry"} in asked
    assert {"user": False, "scopes": ["repository:site/bb:pull"], "service": "wwfast-test-registry"} in asked
    assert {"user": USER, "scopes": ["repository:site/bb:pull"], "service": "wwfast-test-registry"} in asked
    assert sorted(images_of(state)) == ["tok"]


def images_of(state):
    return [n for n in os.listdir(layout.images_dir(state)) if not n.startswith(".")]


def test_unreachable_daemon_fails_cleanly(tmp_path):
    state = tmp_path / "state"
    env = dict(os.environ, DOCKER_HOST=f"unix://{tmp_path}/no-docker.sock")
    run = wwfast(state, "docker-daemon:bb:1", env=env)
    assert run.returncode == 1 and "docker-daemon:bb:1: pull failed" in run.stderr, run.stderr
    assert "no-docker.sock" in run.stderr     # DOCKER_HOST is the daemon asked
    assert not os.path.exists(layout.image_dir(state, "bb")) and leftovers(state) == []


def test_layout_check_refuses_a_corrupt_blob(oci, tmp_path):
    """Our own pass over what skopeo wrote: every blob against its name, then the manifest chain."""
    copy = tmp_path / "copy"
    shutil.copytree(oci, copy)
    with open(copy / "index.json") as f:
        index = json.load(f)
    index["manifests"] = [m for m in index["manifests"]
                          if m["annotations"]["org.opencontainers.image.ref.name"] == "latest"]
    (copy / "index.json").write_text(json.dumps(index))
    assert registry.check_layout(str(copy), "t")["platform"] == "linux/amd64"
    with pytest.raises(registry.PullError, match="the image is for linux/amd64, not linux/arm64"):
        registry.check_layout(str(copy), "t", platform="linux/arm64")
    victim = copy / "blobs" / "sha256" / index["manifests"][0]["digest"].split(":")[1]
    victim.write_bytes(victim.read_bytes().replace(b"schemaVersion", b"schemaVersioN"))
    with pytest.raises(registry.PullError, match="does not match its digest"):
        registry.check_layout(str(copy), "t")


def test_kill_9_during_a_pull_leaves_the_old_image(plain, tmp_path):
    """A 'registry' that accepts and never answers holds skopeo mid-pull; wwfast is killed there."""
    state = tmp_path / "state"
    assert wwfast(state, f"docker://{plain.host}/bb:1", "bb", "--tls-verify=false").returncode == 0
    before = snapshot(layout.image_root(state, "bb")), info(state, "bb")
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        silent.settimeout(120)
        proc = subprocess.Popen([sys.executable, "-m", "wwfast.cli", "--state", str(state), "image", "import",
                                 f"docker://127.0.0.1:{silent.getsockname()[1]}/bb:1", "bb", "--update",
                                 "--tls-verify=false"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        conn, _ = silent.accept()            # the record: skopeo is talking to the registry now
        with conn:
            under = _descendants(proc.pid)
            assert under, "no skopeo under wwfast while it pulls"
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            assert all(_wait_gone(pid) for pid in under), "skopeo outlived wwfast"
    assert (snapshot(layout.image_root(state, "bb")), info(state, "bb")) == before
    assert len(leftovers(state)) == 1
    again = wwfast(state, f"docker://{plain.host}/bb:1", "bb", "--update", "--tls-verify=false")
    assert again.returncode == 0, again.stderr
    assert leftovers(state) == []


@pytest.mark.qemu
def test_pull_exec_build_boot(plain, tmp_path, kernel_path, project_root):
    """The issue's goal, nothing by hand: pull from the registry, change the image with exec, build,
    and the kernel boots the built archive showing the change."""
    tree = make_busybox_tree(tmp_path / "tree", marker="as pushed")
    os.makedirs(tree / "boot")
    shutil.copy(kernel_path, tree / "boot" / kernel_path.name)
    lay = Layout(tmp_path / "layout")
    lay.tag("boot", lay.image([tree_layer(tree)]))
    plain.push(f"oci:{lay.root}:boot", "bootable:1")
    state, conf = tmp_path / "state", tmp_path / "conf"
    run = wwfast(state, f"docker://{plain.host}/bootable:1", "node-img", "--tls-verify=false")
    assert run.returncode == 0, run.stderr
    change = subprocess.run([sys.executable, "-m", "wwfast.cli", "--state", str(state), "image", "exec", "node-img",
                             "--", "sh", "-c", "echo pulled-and-changed > /etc/marker"],
                            capture_output=True, text=True, timeout=300)
    assert change.returncode == 0, change.stderr
    conf.mkdir()
    (conf / "nodes.yaml").write_text("nodes:\n  n1:\n    image name: node-img\n")
    env = dict(os.environ, PYTHONPATH=str(project_root))
    for stage in ("define", "build"):
        out = subprocess.run([sys.executable, "-m", f"stages.{stage}", "--conf", str(conf), "--state", str(state)],
                             capture_output=True, text=True, env=env, cwd=project_root, timeout=300)
        assert out.returncode == 0, out.stdout + out.stderr
    built = layout.build_images_dir(state)
    console = boot_until(os.path.join(built, "node-img.kernel"), os.path.join(built, "node-img.cpio.zst"),
                         "WWFAST-BOOT-MARKER")
    assert "WWFAST-BOOT-MARKER pulled-and-changed" in console
