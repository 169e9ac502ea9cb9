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


def _keygen(directory, name, key_type, comment):
    final = os.path.join(directory, name)
    if os.path.exists(final) and os.path.exists(final + ".pub"):
        return False
    if shutil.which("ssh-keygen") is None:
        raise RuntimeError("ssh-keygen not found: install openssh-client (scripts/debian-packages.txt)")
    tmpdir = tempfile.mkdtemp(prefix=".keygen.", dir=directory)
    try:
        tmp = os.path.join(tmpdir, "key")
        subprocess.run(["ssh-keygen", "-q", "-t", key_type, "-N", "", "-C", comment, "-f", tmp],
                       check=True, capture_output=True, stdin=subprocess.DEVNULL)
        # public half first: the private key's presence marks the pair complete
        os.replace(tmp + ".pub", final + ".pub")
        os.replace(tmp, final)
        fsutil.fsync_dir(directory)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
    return True


def ensure_keys(state_dir):
    """Create whichever keys are missing; return the names made (empty when all existed)."""
    directory = ssh_dir(state_dir)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    made = []
    with fsutil.locked(os.path.join(directory, ".lock"), what="another key generation"):
        for key_type in HOST_KEY_TYPES:
            name = f"ssh_host_{key_type}_key"
            if _keygen(directory, name, key_type, "wwfast cluster host key"):
                made.append(name)
        if _keygen(directory, ADMIN_KEY, "ed25519", "wwfast admin"):
            made.append(ADMIN_KEY)
    return made
