"""`wwfast image exec|shell`: run a command inside an image as Warewulf does, without ever
changing the image in place.

Warewulf's `wwctl image exec` changes the tree in place: a command that fails half way, or a
kill -9, leaves a half-changed image. We work on a copy instead (`cp -a --reflink=auto`: a
reflink where the file system has them, a full copy elsewhere) in STATE/images/.<name>.work-*,
run the command there, and swap the copy into place (renameat2 RENAME_EXCHANGE, under the build
stage's lock) only when the command succeeded. A failed command, or a kill -9 of wwfast at any
point, leaves the previous image untouched; the orphaned copy is removed by the next operation
on the image.

The command runs in its own mount, PID and UTS namespaces (unshare(1); see image_child): /run is
a fresh tmpfs, /proc a fresh procfs, /sys and /dev the server's (recursive binds), the server's
/etc/resolv.conf bound over the image's, then each --bind SRC[:DST[:ro]]. Mount points the image
lacked are created for the run and removed after it, so nothing of the binds is left in the
image. The image's /etc/warewulf/image_exit.sh (or container_exit.sh) runs after a command that
succeeded, as in Warewulf. Then image.json's content fingerprint is recomputed, so the next build
repacks the image.
"""
import contextlib
import ctypes
import json
import os
import re
import shutil
import signal
import subprocess
import sys

from wwfast import fsutil
from wwfast.builder import images

EXIT_SCRIPTS = ["/etc/warewulf/image_exit.sh", "/etc/warewulf/container_exit.sh"]
SHELLS = ["/bin/bash", "/bin/sh"]
PATH = "/bin:/sbin:/usr/bin:/usr/sbin:/usr/local/bin:/usr/local/sbin"
_PR_SET_PDEATHSIG = 1


def parse_bind(text):
    """SRC[:DST[:ro]] -> mount entry (DST defaults to SRC)."""
    parts = text.split(":")
    if not parts[0] or len(parts) > 3 or (len(parts) == 3 and parts[2] != "ro"):
        raise images.ImageError(f"--bind {text!r}: expected SRC[:DST[:ro]]")
    src = os.path.abspath(parts[0])
    dst = parts[1] if len(parts) > 1 and parts[1] else parts[0]
    if not dst.startswith("/"):
        raise images.ImageError(f"--bind {text!r}: the destination must be an absolute path in the image")
    if not os.path.exists(src):
        raise images.ImageError(f"--bind {text!r}: {src}: no such file or directory on the server")
    return {"kind": "bind", "src": src, "dst": dst, "ro": len(parts) == 3}


def system_mounts():
    """What every run gets, in order (later mounts may sit on earlier ones)."""
    return [
        {"kind": "tmpfs", "dst": "/run"},
        {"kind": "proc", "dst": "/proc"},
        {"kind": "rbind", "src": "/sys", "dst": "/sys"},
        {"kind": "rbind", "src": "/dev", "dst": "/dev"},
        {"kind": "bind", "src": "/etc/resolv.conf", "dst": "/etc/resolv.conf", "optional": True},
    ]


def command_env(name):
    """The server's environment less our interpreter's, with Warewulf's shell settings."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PYTHON", "VIRTUAL_ENV", "WWFAST_"))}
    env.update(PATH=PATH, PS1=f"[wwfast:{name}] \\w\\$ ", HISTFILE="/dev/null",
               WW_IMAGE_SHELL=name, WWFAST_IMAGE=name)
    return env


def shell_argv(rootfs):
    """Warewulf's choice: $SHELL when the image has it, else bash, else sh."""
    candidates = ([os.environ["SHELL"]] if os.environ.get("SHELL") else []) + SHELLS
    for shell in candidates:
        if os.path.isfile(fsutil.resolve_in_root(rootfs, shell)):
            return [shell]
    raise images.ImageError(f"no shell found in the image (looked for {', '.join(candidates)})")


def _die_with_parent():
    # If wwfast is killed, unshare gets SIGKILL; its --kill-child then ends the namespace.
    ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _remove_mount_points(record, log):
    """Remove what the run created to mount on, deepest first, if it is still an empty stand-in, and
    put back the mtime of the directories they were made in (unless the command changed them too)."""
    created, parents = record.get("created", []), record.get("parents", {})
    now = {}
    for path in parents:
        with contextlib.suppress(FileNotFoundError):
            now[path] = os.lstat(path)
    for path in reversed(created):
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            continue       # it was on the /run tmpfs
        if os.path.isdir(path) and not os.path.islink(path):
            if os.listdir(path):
                log(f"image exec: warning: {path} was a mount point and is not empty now: kept")
                continue
            os.rmdir(path)
        elif st.st_size == 0:
            os.unlink(path)
        else:
            log(f"image exec: warning: {path} was a mount point and has content now: kept")
    for path, (before, after) in parents.items():
        st = now.get(path)
        if st is not None and st.st_mtime_ns == after:
            os.utime(path, ns=(st.st_atime_ns, before), follow_symlinks=False)


def _mounts_under(path):
    """Mount points of this (the server's) mount namespace at or under path: must be none."""
    path = os.path.realpath(path)
    found = []
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), line.split()[4])
            if point == path or point.startswith(path + "/"):
                found.append(point)
    return found


def run_in_image(state_dir, name, argv, binds=(), shell=False, syncuser=False, server_etc="/etc", log=print):
    """Run argv (or the image's shell) inside image `name`; returns the command's exit status.
    The image is replaced by the changed copy when the command succeeded (a shell: whenever it
    exited by itself, whatever its status), else left as it was. syncuser: when the run changed
    /etc/passwd or /etc/group, align the ids with the server's before the swap (as Warewulf)."""
    from wwfast.builder import image_admin, syncuser as sync_ids
    mounts = system_mounts() + [parse_bind(b) for b in binds]
    with image_admin.change(state_dir, name, log=log) as ch:
        if shell:
            argv = shell_argv(ch.rootfs)
        if not argv:
            raise images.ImageError("no command given (wwfast image exec NAME -- CMD ...)")
        userdb = _userdb(ch.rootfs)
        work = os.path.join(ch.tmp, "run")
        os.mkdir(work, 0o700)
        spec = {"root": ch.rootfs, "mounts": mounts, "argv": list(argv), "env": command_env(name),
                "exit_scripts": EXIT_SCRIPTS, "record": os.path.join(work, "mountpoints.json"),
                "outcome": os.path.join(work, "outcome.json")}
        fsutil.atomic_write(os.path.join(work, "spec.json"), json.dumps(spec) + "\n", perms=0o600)
        status = _launch(os.path.join(work, "spec.json"))
        outcome = _read_json(spec["outcome"])
        _remove_mount_points(_read_json(spec["record"]) or {}, log)
        shutil.rmtree(work)
        leaked = _mounts_under(ch.tmp)
        if leaked:
            raise images.ImageError(f"mounts of the run are visible outside it: {', '.join(leaked)}")
        ch.keep = outcome is not None and (outcome["status"] == 0 or (shell and outcome["signal"] is None))
        if not ch.keep:
            log(f"image exec: {' '.join(argv)} failed (status {status}); image {name} is unchanged")
            return status or 1
        if outcome["status"] != 0:
            log(f"image shell: the shell exited with status {outcome['status']}; keeping its changes")
        if syncuser and _userdb(ch.rootfs) != userdb:
            sync_ids.sync(ch.rootfs, server_etc, log=log)
        ch.info["changed"] = images.now_utc()
        ch.info["last_exec"] = list(argv)
    log(f"image {name}: changed; {ch.info['entries']} entries, {ch.info['bytes']} bytes, fingerprint "
        f"{ch.info['fingerprint'][:16]} (the next build repacks it)")
    return outcome["status"]


def _userdb(rootfs):
    out = []
    for what in ("passwd", "group"):
        try:
            with open(fsutil.resolve_in_root(rootfs, f"/etc/{what}"), "rb") as f:
                out.append(f.read())
        except OSError:
            out.append(None)
    return out


def _read_json(path):
    try:
        with open(path, "rb") as f:
            return json.loads(f.read())
    except (FileNotFoundError, ValueError):
        return None


def _launch(spec_path):
    cmd = ["unshare", "--mount", "--pid", "--uts", "--fork", "--kill-child", "--propagation", "private",
           "--", sys.executable, "-m", "wwfast.builder.image_child", spec_path]
    # ^C and ^\ go to the command in the foreground; we wait for it to decide.
    old = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGQUIT)}
    try:
        proc = subprocess.Popen(cmd, preexec_fn=_die_with_parent)
        return proc.wait()
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)

