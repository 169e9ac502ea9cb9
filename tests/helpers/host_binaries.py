"""Put a host program into a test image tree, with the shared libraries it loads (for QEMU boots)."""
import os
import shutil
import subprocess


def copy_binary(root, binary):
    """A host program into the image tree with the shared libraries ldd says it loads."""
    files = [binary]
    for line in subprocess.run(["ldd", binary], capture_output=True, text=True, check=True).stdout.splitlines():
        parts = line.split()
        path = parts[2] if "=>" in parts and len(parts) > 2 else parts[0]
        if path.startswith("/"):
            files.append(path)
    for path in files:
        dest = root / path.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(os.path.realpath(path), dest)
