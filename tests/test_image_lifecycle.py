"""`wwfast image exec|shell` with real unshare(1) namespaces on a busybox image: the change lands,
nothing of the mounts stays in the image, and a failure or kill -9 leaves the old image whole."""
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import threading

import pytest

from helpers.busybox_tree import make_busybox_tree
from helpers.qemu import boot_until
from helpers.trees import snapshot
from wwfast import fsutil, layout
from wwfast.build import images

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


def _descendants(pid):
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _wait_gone(pid, timeout=60):
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        return bool(select.select([fd], [], [], timeout)[0])
    finally:
        os.close(fd)


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


def test_commit_waits_for_a_running_build(site):
    state = site
    with fsutil.locked(layout.build_lock(state)):
        proc = subprocess.Popen([sys.executable, "-m", "wwfast.cli", "--state", str(state), "image", "exec", "bb",
                                 "--", "sh", "-c", "echo during-build > /etc/marker"],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env=dict(os.environ, PYTHONUNBUFFERED="1"))
        lines = []
        reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")))
        first = proc.stdout.readline()     # the exec says it waits: the command ran, the swap has not
        assert "waiting for the build run" in first, first
        assert open(os.path.join(layout.image_root(state, "bb"), "etc/marker")).read() == "original image\n"
        reader.start()
    assert proc.wait(timeout=120) == 0
    reader.join()
    assert open(os.path.join(layout.image_root(state, "bb"), "etc/marker")).read() == "during-build\n"


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
                         os.path.join(layout.build_images_dir(state), "bb.cpio"), "WWFAST-BOOT-MARKER")
    assert "WWFAST-BOOT-MARKER survived the kill" in console
