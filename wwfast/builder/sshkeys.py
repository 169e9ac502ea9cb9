"""SSH keys made once on the server and kept in STATE/ssh/ (the ssh.* overlays include them).

Host keys (one set for the cluster, as Warewulf's `configure ssh`): ssh_host_{ed25519,ecdsa,rsa}_key[.pub].
Admin key: id_ed25519[.pub], whose public half the ssh.authorized_keys overlay gives root on every node.
Existing keys are never replaced; a key is generated into a temp name and renamed, so a crash leaves
either no key or a whole one.
"""
import os
import shutil
import subprocess
import tempfile

from wwfast import fsutil, layout

HOST_KEY_TYPES = ("ed25519", "ecdsa", "rsa")
ADMIN_KEY = "id_ed25519"


def ssh_dir(state_dir):
    return layout.ssh_dir(state_dir)


def _start_keygen(directory, name, key_type, comment):
    """Start ssh-keygen for a missing key pair: (name, temp dir, process), or None when the pair exists."""
    final = os.path.join(directory, name)
    if os.path.exists(final) and os.path.exists(final + ".pub"):
        return None
    if shutil.which("ssh-keygen") is None:
        raise RuntimeError("ssh-keygen not found: install openssh-client (scripts/debian-packages.txt)")
    tmpdir = tempfile.mkdtemp(prefix=".keygen.", dir=directory)
    proc = subprocess.Popen(["ssh-keygen", "-q", "-t", key_type, "-N", "", "-C", comment, "-f",
                             os.path.join(tmpdir, "key")], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    return name, tmpdir, proc


def _finish_keygen(directory, name, tmpdir, proc):
    try:
        output = proc.communicate()[0]
        if proc.returncode != 0:
            raise subprocess.CalledProcessError(proc.returncode, proc.args, output)
        tmp = os.path.join(tmpdir, "key")
        # public half first: the private key's presence marks the pair complete
        os.replace(tmp + ".pub", os.path.join(directory, name) + ".pub")
        os.replace(tmp, os.path.join(directory, name))
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def ensure_keys(state_dir):
    """Create whichever keys are missing; return the names made (empty when all existed).

    The missing keys are generated at once (an RSA key takes the longest; the others fit beside it)."""
    directory = ssh_dir(state_dir)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    wanted = [(f"ssh_host_{t}_key", t, "wwfast cluster host key") for t in HOST_KEY_TYPES]
    wanted.append((ADMIN_KEY, "ed25519", "wwfast admin"))
    with fsutil.locked(os.path.join(directory, ".lock"), what="another key generation"):
        started = []
        try:
            for name, key_type, comment in wanted:
                job = _start_keygen(directory, name, key_type, comment)
                if job:
                    started.append(job)
        finally:
            errors = []
            for name, tmpdir, proc in started:
                try:
                    _finish_keygen(directory, name, tmpdir, proc)
                except (OSError, subprocess.CalledProcessError) as e:
                    errors.append(e)
        if errors:
            raise errors[0]
        if started:
            fsutil.fsync_dir(directory)
    return [name for name, _, _ in started]
