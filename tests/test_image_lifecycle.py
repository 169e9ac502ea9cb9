"""`wwfast image exec|shell` with real unshare(1) namespaces on a busybox image: the change lands,
nothing of the mounts stays in the image, and a failure or kill -9 leaves the old image whole."""
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import threading

import pytest

from helpers.busybox_tree import make_busybox_tree
from helpers.processes import descendants as _descendants, wait_gone as _wait_gone
from helpers.qemu import boot_until
from helpers.trees import snapshot
from wwfast import fsutil, layout
from wwfast.builder import images, syncuser

pytestmark = pytest.mark.skipif(shutil.which("unshare") is None, reason="util-linux unshare is missing")


@pytest.fixture
def site(tmp_path):
    state = tmp_path / "state"
    src = make_busybox_tree(tmp_path / "src", marker="original image")
    os.makedirs(src / "boot")
    (src / "boot" / "vmlinuz-6.1.0-13-amd64").write_bytes(b"a kernel for the build step")
    set_old_times(src)
    images.import_image(str(src), "bb", state, log=lambda *_: None)
    return state


def set_old_times(root, mtime=1_600_000_000):
    """Times far from now: a directory touched by a run shows, whatever the second."""
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            os.utime(os.path.join(dirpath, name), (mtime, mtime), follow_symlinks=False)
    os.utime(root, (mtime, mtime))


def wwfast(state, *args, **kw):
    return subprocess.run([sys.executable, "-m", "wwfast.cli", "--state", str(state), "image", *args],
                          capture_output=True, text=True, timeout=300, **kw)


def image_state(state, name="bb"):
    with open(layout.image_info(state, name), "rb") as f:
        info = json.loads(f.read())
    return snapshot(layout.image_root(state, name)), info


def leftovers(state):
    return [n for n in os.listdir(layout.images_dir(state)) if ".work-" in n]


def test_exec_changes_the_image_and_leaves_no_mount_behind(site, tmp_path):
    state = site
    before, info_before = image_state(state)
    share = tmp_path / "share"
    share.mkdir()
    (share / "in.txt").write_text("from the server\n")
    (tmp_path / "ro.txt").write_text("read only\n")
    script = ("set -e; cat /data/in.txt > /etc/marker; echo changed >> /etc/marker; "
              "busybox cat /proc/1/cmdline | busybox tr '\\0' ' ' > /data/init.txt; "   # PID 1 of its own namespace
              "busybox cat /etc/resolv.conf > /data/resolv.txt; "
              "test -c /dev/null && test -d /sys/kernel && echo ok > /data/mounts.txt; "
              "busybox touch /run/scratch /deep/dir/x 2>/dev/null || true; "
              "if echo no > /opt/ro.txt; then exit 9; fi; "
              "echo \"$WW_IMAGE_SHELL $PATH\" > /data/env.txt")
    run = wwfast(state, "exec", "bb", "--bind", f"{share}:/data", "--bind", f"{tmp_path / 'ro.txt'}:/opt/ro.txt:ro",
                 "--", "sh", "-c", script)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "image bb: changed" in run.stdout
    assert (share / "init.txt").read_text().startswith(sys.executable)
    host_resolv = open("/etc/resolv.conf").read() if os.path.exists("/etc/resolv.conf") else ""
    assert (share / "resolv.txt").read_text() == host_resolv
    assert (share / "mounts.txt").read_text() == "ok\n"
    assert (share / "env.txt").read_text().startswith("bb /bin:/sbin:/usr/bin")
    assert (tmp_path / "ro.txt").read_text() == "read only\n"

    after, info_after = image_state(state)
    root = layout.image_root(state, "bb")
    assert open(os.path.join(root, "etc/marker")).read() == "from the server\nchanged\n"
    # Only /etc/marker (and its directory's times) changed: no /data, /opt, /run, resolv.conf, and
    # /proc /sys /dev hold what they held.
    changed = {p for p in set(before) | set(after) if before.get(p) != after.get(p)}
    assert changed == {"etc/marker"}, changed
    assert info_after["fingerprint"] != info_before["fingerprint"]
    assert info_after["fingerprint"] == images.tree_digest(root)[0]
    assert info_after["last_exec"][:2] == ["sh", "-c"]
    assert leftovers(state) == []
    with open("/proc/self/mountinfo") as f:
        assert str(state) not in f.read()


def test_symlinked_resolv_conf_is_bound_inside_the_image(site, tmp_path):
    """systemd-resolved images link /etc/resolv.conf to /run/...: the server's file is bound at the
    link's target inside the image (on the run's /run tmpfs), never through the link on the server."""
    state = site
    root = layout.image_root(state, "bb")
    with images.image_lock(state, "bb"):
        os.symlink("/run/systemd/resolve/stub-resolv.conf", os.path.join(root, "etc/resolv.conf"))
    before = image_state(state)
    out = tmp_path / "out"
    out.mkdir()
    run = wwfast(state, "exec", "bb", "--bind", f"{out}:/out", "--", "sh", "-c",
                 "busybox cat /etc/resolv.conf > /out/seen; busybox readlink /etc/resolv.conf > /out/link")
    assert run.returncode == 0, run.stderr
    host_resolv = open("/etc/resolv.conf").read() if os.path.exists("/etc/resolv.conf") else ""
    assert (out / "seen").read_text() == host_resolv
    assert (out / "link").read_text() == "/run/systemd/resolve/stub-resolv.conf\n"
    after = image_state(state)
    assert after[0] == before[0]             # no /run/systemd left, the link untouched
    assert not os.path.exists(os.path.join(root, "run"))


def test_next_build_repacks_after_exec(site, tmp_path, project_root):
    state, conf = site, tmp_path / "conf"
    conf.mkdir()
    (conf / "nodes.yaml").write_text("nodes:\n  n1:\n    image name: bb\n")
    env = dict(os.environ, PYTHONPATH=str(project_root))

    def stage(name):
        run = subprocess.run([sys.executable, "-m", f"stages.{name}", "--conf", str(conf), "--state", str(state)],
                             capture_output=True, text=True, env=env, cwd=project_root, timeout=300)
        assert run.returncode == 0, run.stdout + run.stderr
        return run.stdout

    stage("define")
    assert "image bb: rebuilding (no previous build)" in stage("build")
    assert "rebuilding" not in stage("build")    # unchanged inputs: nothing repacked
    assert wwfast(state, "exec", "bb", "--", "sh", "-c", "echo repacked > /etc/marker").returncode == 0
    out = stage("build")
    assert "image bb: rebuilding (the image was re-imported (content fingerprint changed)" in out, out
    packed = os.path.join(layout.build_images_dir(state), "bb.cpio.zst")   # build packs straight into zstd
    listing = subprocess.run(f"zstd -dc {packed} | cpio -i --to-stdout etc/marker", shell=True, capture_output=True)
    assert listing.stdout == b"repacked\n", listing.stderr


def test_failed_command_leaves_the_image_as_it_was(site):
    state = site
    before = image_state(state)
    run = wwfast(state, "exec", "bb", "--", "sh", "-c", "echo broken > /etc/marker; busybox rm /bin/ls; exit 3")
    assert run.returncode == 3
    assert "failed (status 3); image bb is unchanged" in run.stdout
    assert image_state(state) == before
    assert leftovers(state) == []
    missing = wwfast(state, "exec", "bb", "--", "/no/such/tool")
    assert missing.returncode == 127 and "/no/such/tool" in missing.stderr
    assert image_state(state) == before


def test_shell_keeps_changes_of_a_shell_that_exits(site):
    state = site
    script = "echo from-shell > /etc/shelled\nfalse\nexit 4\n"
    run = wwfast(state, "shell", "bb", input=script, env=dict(os.environ, SHELL="/bin/bash"))
    assert run.returncode == 4, run.stderr
    assert "keeping its changes" in run.stdout
    assert open(os.path.join(layout.image_root(state, "bb"), "etc/shelled")).read() == "from-shell\n"


def _kill_during_exec(state, tmp_path):
    """Start an exec that changes the image, wait until its command says it changed it, kill -9 wwfast;
    returns the pids that were running under it."""
    sync = tmp_path / "sync"
    sync.mkdir()
    os.mkfifo(sync / "fifo")
    fd = os.open(sync / "fifo", os.O_RDWR)      # reader and writer: never blocks, never EOF
    try:
        proc = subprocess.Popen([sys.executable, "-m", "wwfast.cli", "--state", str(state), "image", "exec", "bb",
                                 "--bind", f"{sync}:/sync", "--", "sh", "-c",
                                 "echo half > /etc/marker; busybox rm /bin/ls; echo ready > /sync/fifo; "
                                 "exec busybox sleep 600"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert select.select([fd], [], [], 120)[0], "the command never reported it had changed the tree"
        assert os.read(fd, 64) == b"ready\n"
        under = _descendants(proc.pid)
        assert under, "no process under wwfast while its command runs"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        os.close(fd)
    return under


def test_kill_9_during_exec_leaves_the_previous_image(site, tmp_path):
    state = site
    before = image_state(state)
    under = _kill_during_exec(state, tmp_path)
    assert all(_wait_gone(pid) for pid in under), "the command outlived wwfast (namespace not torn down)"
    assert image_state(state) == before
    assert len(leftovers(state)) == 1     # the killed run's copy, until the next operation on the image
    run = wwfast(state, "exec", "bb", "--", "sh", "-c", ":")
    assert run.returncode == 0, run.stderr
    assert leftovers(state) == []
    assert image_state(state)[0] == before[0]


WAITERS = {
    "exec": (["exec", "bb", "--", "sh", "-c", "echo during-build > /etc/marker"],
             lambda st: open(os.path.join(layout.image_root(st, "bb"), "etc/marker")).read() == "during-build\n"),
    "copy": (["copy", "bb", "bb3"], lambda st: os.path.isdir(layout.image_root(st, "bb3"))),
    "rename": (["rename", "bb", "bb2"], lambda st: os.path.isdir(layout.image_root(st, "bb2"))
               and not os.path.exists(layout.image_dir(st, "bb"))),
    "delete": (["delete", "bb", "--yes"], lambda st: not os.path.exists(layout.image_dir(st, "bb"))),
}


@pytest.mark.parametrize("action", sorted(WAITERS))
def test_changes_wait_for_a_running_build(site, action):
    """The build lock is held: each change does its work, says it waits, and swaps only after."""
    state = site
    argv, done = WAITERS[action]
    before = image_state(state)
    with fsutil.locked(layout.build_lock(state)):
        proc = subprocess.Popen([sys.executable, "-m", "wwfast.cli", "--state", str(state), "--conf",
                                 str(state / "no-conf"), "image", *argv],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env=dict(os.environ, PYTHONUNBUFFERED="1"))
        lines = []
        reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")))
        first = proc.stdout.readline()     # the record that it waits: the swap has not happened
        assert "waiting for the build run" in first, first
        assert image_state(state) == before and not done(state)
        reader.start()
    assert proc.wait(timeout=120) == 0, lines
    reader.join()
    assert done(state)


NODE_FILE = """\
# site nodes: this comment must survive a rename
nodeprofiles:
  default:
    image name: bb    # the base image
nodes:
  n1:
    profiles: [default]
  n2:
    image name: other
"""


def test_copy_show_rename_delete(site, tmp_path, project_root):
    state, conf = site, tmp_path / "conf"
    conf.mkdir()
    (conf / "nodes.yaml").write_text(NODE_FILE)

    def image(*args):
        return subprocess.run([sys.executable, "-m", "wwfast.cli", "--state", str(state), "--conf", str(conf),
                               "image", *args], capture_output=True, text=True, timeout=300)

    assert image("copy", "bb", "other").returncode == 0
    original, copied = image_state(state, "bb"), image_state(state, "other")
    assert copied[0] == original[0]
    assert copied[1]["fingerprint"] == original[1]["fingerprint"] and copied[1]["copied_from"] == "bb"
    again = image("copy", "bb", "other")
    assert again.returncode == 1 and "already exists" in again.stderr

    show = image("show", "bb")
    assert show.stdout.strip() == os.path.abspath(layout.image_root(state, "bb"))
    doc = json.loads(image("show", "bb", "--json").stdout)
    assert doc["used_by"] == ["node n1", "profile default"]
    assert doc["kernel"] == {"version": "6.1.0-13", "path": "/boot/vmlinuz-6.1.0-13-amd64"}
    assert doc["built"] is None and doc["bytes"] == original[1]["bytes"]

    refused = image("delete", "bb")
    assert refused.returncode == 1 and "used by node n1, profile default" in refused.stderr
    assert image_state(state, "bb") == original

    run = image("rename", "bb", "bb2")
    assert run.returncode == 0, run.stderr
    assert not os.path.exists(layout.image_dir(state, "bb"))
    assert image_state(state, "bb2")[0] == original[0] and image_state(state, "bb2")[1]["name"] == "bb2"
    text = (conf / "nodes.yaml").read_text()
    assert re.search(r"image name: bb2 +# the base image", text) and text.startswith("# site nodes")
    assert "image name: other" in text

    env = dict(os.environ, PYTHONPATH=str(project_root))
    define = subprocess.run([sys.executable, "-m", "stages.define", "--conf", str(conf), "--state", str(state)],
                            capture_output=True, text=True, env=env, cwd=project_root, timeout=300)
    assert define.returncode == 0, define.stderr
    listing = image("list").stdout.splitlines()
    assert listing[0].split()[:6] == ["IMAGE", "KERNEL", "ENTRIES", "SIZE", "BUILT", "NODES"]
    rows = {line.split()[0]: line.split() for line in listing[1:]}
    assert rows["bb2"][1] == "6.1.0-13" and rows["bb2"][6] == "1" and rows["other"][6] == "1"

    refused = image("delete", "other")
    assert refused.returncode == 1 and "node n2" in refused.stderr
    forced = image("delete", "other", "--force")
    assert forced.returncode == 0 and "still used by node n2" in forced.stdout
    assert images.list_images(state) == ["bb2"] and leftovers(state) == []


# ---- syncuser ----------------------------------------------------------------------------------

SERVER_PASSWD = "root:x:0:0:root:/root:/bin/sh\nalice:x:2001:2001::/home/alice:/bin/sh\n" \
                "x:x:1600:1600::/:/bin/sh\ny:x:1500:1500::/:/bin/sh\ncarol:x:2002:2002::/:/bin/sh\n"
SERVER_GROUP = "root:x:0:\nalice:x:2001:\nx:x:1600:\ny:x:1500:\ncarol:x:2002:\n"
IMAGE_PASSWD = "root:x:0:0:root:/root:/bin/sh\nalice:x:1001:1001::/home/alice:/bin/sh\n" \
               "x:x:1500:1500::/:/bin/sh\ny:x:1600:1600::/:/bin/sh\n+::::::\nbob:x:1002:1002::/:/bin/sh\n"
IMAGE_GROUP = "root:x:0:\nalice:x:1001:\nx:x:1500:\ny:x:1600:\nbob:x:1002:\n"


@pytest.fixture
def ids_site(site, tmp_path):
    """The server's passwd/group in a directory of their own, and an image whose ids differ."""
    server = tmp_path / "server-etc"
    server.mkdir()
    (server / "passwd").write_text(SERVER_PASSWD)
    (server / "group").write_text(SERVER_GROUP)
    with images.image_lock(site, "bb"):
        root = layout.image_root(site, "bb")
        with open(os.path.join(root, "etc/passwd"), "w") as f:
            f.write(IMAGE_PASSWD)
        with open(os.path.join(root, "etc/group"), "w") as f:
            f.write(IMAGE_GROUP)
        os.makedirs(os.path.join(root, "home/alice"))
        for rel, uid, gid, mode in (("home/alice", 1001, 1001, 0o750), ("home/alice/tool", 1001, 1001, 0o4755),
                                    ("etc/x-file", 1500, 1600, 0o644), ("etc/bob-file", 1002, 1002, 0o600)):
            path = os.path.join(root, rel)
            if not os.path.exists(path):
                open(path, "w").close()
            os.chown(path, uid, gid)
            os.chmod(path, mode)
        host_file = tmp_path / "host-owned"
        host_file.write_text("outside the image\n")
        os.chown(host_file, 1001, 1001)
        os.symlink(str(host_file), os.path.join(root, "etc/out-link"))
        os.lchown(os.path.join(root, "etc/out-link"), 1001, 1001)
    return site, server, host_file


def owner(root, rel):
    st = os.lstat(os.path.join(root, rel))
    return st.st_uid, st.st_gid


def test_syncuser_aligns_ids_by_warewulfs_rules(ids_site):
    state, server, host_file = ids_site
    root = layout.image_root(state, "bb")
    before = image_state(state)
    dry = wwfast(state, "syncuser", "bb", "--write=false", "--server-etc", str(server))
    assert dry.returncode == 0 and "alice 1001 -> 2001" in dry.stdout and "--write=false" in dry.stdout
    assert image_state(state) == before
    run = wwfast(state, "syncuser", "bb", "--server-etc", str(server))
    assert run.returncode == 0, run.stderr
    assert owner(root, "home/alice") == (2001, 2001) and owner(root, "home/alice/tool") == (2001, 2001)
    assert os.lstat(os.path.join(root, "home/alice/tool")).st_mode & 0o7777 == 0o4755   # setuid kept
    assert owner(root, "etc/x-file") == (1600, 1500)          # x and y swapped their ids
    assert owner(root, "etc/bob-file") == (1002, 1002)        # only in the image: kept
    assert owner(root, "etc/out-link") == (2001, 2001)        # the link itself ...
    assert (os.stat(host_file).st_uid, os.stat(host_file).st_gid) == (1001, 1001)   # ... never its target
    passwd = open(os.path.join(root, "etc/passwd")).read()
    assert passwd == SERVER_PASSWD + "bob:x:1002:1002::/:/bin/sh\n"
    assert open(os.path.join(root, "etc/group")).read() == SERVER_GROUP + "bob:x:1002:\n"
    info = image_state(state)[1]
    assert info["fingerprint"] == images.tree_digest(root)[0] != before[1]["fingerprint"]
    again = wwfast(state, "syncuser", "bb", "--write=false", "--server-etc", str(server))
    assert "already in sync" in again.stdout


def test_syncuser_conflict_changes_nothing(ids_site):
    state, server, _ = ids_site
    with open(server / "passwd", "a") as f:
        f.write("dave:x:1002:1002::/:/bin/sh\n")      # the server gives bob's image id to another name
    before = image_state(state)
    run = wwfast(state, "syncuser", "bb", "--server-etc", str(server))
    assert run.returncode == 1 and "id 1002 is 'dave' on the server but 'bob' in the image" in run.stderr
    assert image_state(state) == before and leftovers(state) == []


def test_exec_syncuser_after_a_package_adds_a_user(ids_site):
    state, server, _ = ids_site
    from wwfast.builder import image_exec
    with open(server / "passwd", "a") as f:
        f.write("eve:x:4000:4000::/:/bin/sh\n")
    status = image_exec.run_in_image(
        state, "bb", ["sh", "-c", "echo eve:x:3000:3000::/:/bin/sh >> /etc/passwd; echo e > /etc/eve-file; "
                                  "busybox chown 3000 /etc/eve-file"],
        syncuser=True, server_etc=str(server), log=lambda *_: None)
    assert status == 0
    root = layout.image_root(state, "bb")
    assert owner(root, "etc/eve-file")[0] == 4000 and owner(root, "home/alice")[0] == 2001
    assert "eve:x:4000:4000" in open(os.path.join(root, "etc/passwd")).read()


@pytest.mark.qemu
def test_image_boots_after_a_killed_exec(tmp_path, kernel_path, project_root):
    """kill -9 in the middle of an exec; the image still builds and boots with its old content."""
    state, conf = tmp_path / "state", tmp_path / "conf"
    src = make_busybox_tree(tmp_path / "src", marker="survived the kill")
    os.makedirs(src / "boot")
    shutil.copy(kernel_path, src / "boot" / kernel_path.name)
    images.import_image(str(src), "bb", state, log=lambda *_: None)
    _kill_during_exec(state, tmp_path)
    conf.mkdir()
    (conf / "nodes.yaml").write_text("nodes:\n  n1:\n    image name: bb\n")
    env = dict(os.environ, PYTHONPATH=str(project_root))
    for stage in ("define", "build"):
        run = subprocess.run([sys.executable, "-m", f"stages.{stage}", "--conf", str(conf), "--state", str(state)],
                             capture_output=True, text=True, env=env, cwd=project_root, timeout=300)
        assert run.returncode == 0, run.stdout + run.stderr
    console = boot_until(os.path.join(layout.build_images_dir(state), "bb.kernel"),
                         os.path.join(layout.build_images_dir(state), "bb.cpio.zst"), "WWFAST-BOOT-MARKER")
    assert "WWFAST-BOOT-MARKER survived the kill" in console


def test_import_syncuser(tmp_path):
    """import with syncuser: the installed image already has the server's ids; a conflict imports nothing."""
    src = make_busybox_tree(tmp_path / "src")
    (src / "etc" / "passwd").write_text(IMAGE_PASSWD)
    (src / "etc" / "group").write_text(IMAGE_GROUP)
    os.chown(src / "etc" / "marker", 1001, 1001)
    server = tmp_path / "server-etc"
    server.mkdir()
    (server / "passwd").write_text(SERVER_PASSWD)
    (server / "group").write_text(SERVER_GROUP)
    state = tmp_path / "state"
    images.import_image(str(src), "synced", state, syncuser_etc=str(server), log=lambda *_: None)
    root = layout.image_root(state, "synced")
    assert owner(root, "etc/marker") == (2001, 2001)
    assert image_state(state, "synced")[1]["fingerprint"] == images.tree_digest(root)[0]
    with open(server / "passwd", "a") as f:
        f.write("dave:x:1002:1002::/:/bin/sh\n")
    with pytest.raises(syncuser.SyncError, match="id 1002"):
        images.import_image(str(src), "conflict", state, syncuser_etc=str(server), log=lambda *_: None)
    assert images.list_images(state) == ["synced"] and leftovers(state) == []
