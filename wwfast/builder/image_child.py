"""The first process of `wwfast image exec`'s namespaces: mounts, chroot, run, record the outcome.

Started by image_exec as `unshare --mount --pid --uts --fork --kill-child -- python -m
wwfast.builder.image_child SPEC`, so it is PID 1 of a fresh PID namespace with a private mount
namespace: every mount made here disappears with the namespace, and when this process ends the
kernel kills whatever the command left running (daemons a package's postinst started).

SPEC (JSON, written by image_exec outside the image tree):
    root        the image tree (a private copy of the image's rootfs)
    mounts      [{"kind": tmpfs|proc|rbind|bind, "src": host path, "dst": path in the image,
                  "ro": bool, "optional": bool}] in order
    argv, env   the command and its environment
    exit_scripts  run with /bin/sh after a command that succeeded, the first one present (Warewulf's)
    record      where the mount points this process had to create are written (before the command),
                with the mtimes of the directories they were made in, before and after
    outcome     where {"status": N, "signal": S or null} is written when the command has ended
"""
import json
import os
import signal
import subprocess
import sys

from wwfast import fsutil


class SetupError(Exception):
    pass


def _mount(args):
    run = subprocess.run(["mount", *args], capture_output=True, text=True)
    if run.returncode != 0:
        raise SetupError(f"mount {' '.join(args)}: {run.stderr.strip()}")


def _mount_point(root, dst, want_dir, created, parents):
    """The path in root where dst is mounted (symlinks resolved inside root, never outside it);
    a missing one is created (and its missing parents) and recorded, with the mtime its first
    existing parent had, so the image's times can be put back."""
    target = fsutil.resolve_in_root(root, dst)
    missing = []
    path = target
    while not os.path.lexists(path):
        missing.append(path)
        path = os.path.dirname(path)
    if missing and path not in parents and path not in created:
        parents[path] = [os.lstat(path).st_mtime_ns, None]
    for path in reversed(missing):
        if path != target or want_dir:
            os.mkdir(path, 0o755)
        else:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
        created.append(path)
    if os.path.isdir(target) != want_dir:
        kind = "directory" if want_dir else "file"
        raise SetupError(f"{dst}: the image has a {'file' if want_dir else 'directory'} there, "
                         f"a {kind} is needed to bind it")
    return target


def setup_mounts(root, mounts, created, parents):
    for m in mounts:
        kind, dst, src = m["kind"], m["dst"], m.get("src")
        if src is not None and not os.path.exists(src):
            if m.get("optional"):
                continue
            raise SetupError(f"--bind {src}: no such file or directory on the server")
        want_dir = kind in ("tmpfs", "proc") or os.path.isdir(src)
        target = _mount_point(root, dst, want_dir, created, parents)
        if kind == "tmpfs":
            _mount(["-t", "tmpfs", "-o", "mode=0755", "tmpfs", target])
        elif kind == "proc":
            _mount(["-t", "proc", "proc", target])
        elif kind == "rbind":
            _mount(["--rbind", src, target])
        else:
            _mount(["--bind", src, target])
        if m.get("ro"):
            _mount(["-o", "remount,bind,ro", target])


def _run(root, argv, env):
    """Run argv chrooted into root; returns (exit status, signal or None). Reaps every orphan."""
    pid = os.fork()
    if pid == 0:
        try:
            for sig in (signal.SIGINT, signal.SIGQUIT, signal.SIGPIPE, signal.SIGTERM):
                signal.signal(sig, signal.SIG_DFL)
            os.chroot(root)
            os.chdir("/")
            os.execvpe(argv[0], argv, env)
        except OSError as e:
            print(f"wwfast: image exec: {argv[0]}: {e.strerror}", file=sys.stderr)
        os._exit(127)
    while True:   # PID 1 adopts orphans: reap them until our command ends
        wpid, status = os.wait()
        if wpid == pid:
            break
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status), os.WTERMSIG(status)
    return os.waitstatus_to_exitcode(status), None


def main(spec_path):
    with open(spec_path, "rb") as f:
        spec = json.loads(f.read())
    # ^C reaches the whole foreground group: the command decides what it means, not us.
    for sig in (signal.SIGINT, signal.SIGQUIT):
        signal.signal(sig, signal.SIG_IGN)
    root, created, parents = spec["root"], [], {}
    try:
        setup_mounts(root, spec["mounts"], created, parents)
        error = None
    except (SetupError, OSError) as e:
        error = e
    for path, times in parents.items():
        times[1] = os.lstat(path).st_mtime_ns
    fsutil.atomic_write(spec["record"], json.dumps({"created": created, "parents": parents}) + "\n")
    if error is not None:
        print(f"wwfast: image exec: {error}", file=sys.stderr)
        return 125
    status, sig = _run(root, spec["argv"], spec["env"])
    if status == 0:
        for script in spec.get("exit_scripts", []):
            if os.path.isfile(fsutil.resolve_in_root(root, script)):
                status, sig = _run(root, ["/bin/sh", script], spec["env"])
                if status != 0:
                    print(f"wwfast: image exec: {script} failed (status {status})", file=sys.stderr)
                break
    fsutil.atomic_write(spec["outcome"], json.dumps({"status": status, "signal": sig}) + "\n")
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
