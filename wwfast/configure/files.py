"""Write a configuration file only when its content changes, say what changed, restart its service.

Every write is atomic (temp file + rename, wwfast.fsutil) and keeps the file's mode; a file the admin
also edits (/etc/hosts) gets a backup of the previous content first. A file that is a mount point (a
container's /etc/hosts is bind-mounted into it) cannot be renamed over: it is rewritten in place, after
its backup, and the command says so.
"""
import difflib
import errno
import os
import shutil
import stat
import subprocess

from wwfast import fsutil

BACKUP_SUFFIX = ".wwfast-backup"
SHOWN_DIFF_LINES = 20


def read_current(path):
    """The file's text, or None when it does not exist."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        return None


class Change:
    """What writing `new` over `old` (None: no file) did or would do to `path`."""

    def __init__(self, path, old, new, written=False, backup=None):
        self.path, self.old, self.new = path, old, new
        self.written, self.backup = written, backup
        self.in_place = False       # rewritten in place: the file is a mount point

    @property
    def changed(self):
        return self.old != self.new

    def diff_lines(self):
        """'+line' / '-line' for every line added or removed."""
        old = (self.old or "").splitlines()
        new = self.new.splitlines()
        return [line for line in difflib.unified_diff(old, new, lineterm="", n=0)
                if line[:1] in "+-" and not line.startswith(("+++", "---"))]

    def describe(self, what, limit=SHOWN_DIFF_LINES):
        """Lines for the admin: unchanged, created, or the changed lines (up to `limit`)."""
        if not self.changed:
            return [f"{what}: {self.path} unchanged; nothing written"]
        lines = self.diff_lines()
        added = sum(1 for line in lines if line.startswith("+"))
        verb = "created" if self.old is None else "updated" if self.written else "would change"
        head = f"{what}: {self.path} {verb}" + (f" (+{added} -{len(lines) - added} lines)" if self.old is not None
                                                  else f" ({added} lines)")
        if self.backup:
            head += f"; previous content in {self.backup}"
        if self.in_place:
            head += " (in place: the file is a mount point, so it cannot be replaced by a rename)"
        out = [head]
        if self.old is not None:
            out += ["  " + line for line in lines[:limit]]
            if len(lines) > limit:
                out.append(f"  ... and {len(lines) - limit} more changed lines")
        return out


def write_if_changed(path, new, backup=False):
    """Replace `path` with `new` atomically when they differ; returns the Change."""
    old = read_current(path)
    change = Change(path, old, new)
    if not change.changed:
        return change
    mode = 0o644
    if old is not None:
        mode = stat.S_IMODE(os.stat(path).st_mode)
        if backup:
            change.backup = path + BACKUP_SUFFIX
            fsutil.atomic_write(change.backup, old, perms=mode)
    try:
        fsutil.atomic_write(path, new, perms=mode)
    except OSError as e:
        if e.errno != errno.EBUSY or old is None:
            raise
        _write_in_place(path, new)
        change.in_place = True
    change.written = True
    return change


def _write_in_place(path, text):
    """For a bind-mounted file (EBUSY on rename): truncate and write it, then fsync."""
    with open(path, "r+", encoding="utf-8") as f:
        f.truncate(0)
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def restart_command(unit):
    return ["systemctl", "restart", unit]


def restart_service(unit):
    """`systemctl restart UNIT`; returns (ok, message)."""
    command = restart_command(unit)
    systemctl = shutil.which(command[0])
    if systemctl is None:
        return False, f"cannot restart {unit}: systemctl not found (restart it by hand)"
    out = subprocess.run([systemctl, *command[1:]], capture_output=True, text=True)
    if out.returncode != 0:
        detail = (out.stderr or out.stdout).strip()
        return False, f"systemctl restart {unit} failed (exit {out.returncode}): {detail}"
    return True, f"restarted {unit}"
