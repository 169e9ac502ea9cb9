"""Snapshot a directory tree as comparable data: what an extracted archive must reproduce."""
import hashlib
import os
import stat

MTIME = 1_700_000_000


def snapshot(root, mtimes=True, dir_mtimes=True, symlink_mtimes=True):
    """{relpath: (kind, mode, uid, gid, mtime, content-or-target-or-rdev, link group)} for everything
    under root (not root itself). The link group names hard-link identity by the first path."""
    first_path_of_inode = {}
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            st = os.lstat(path)
            mode = st.st_mode
            group = None
            if stat.S_ISREG(mode):
                kind = "file"
                with open(path, "rb") as f:
                    detail = hashlib.sha256(f.read()).hexdigest()
                if st.st_nlink > 1:
                    group = first_path_of_inode.setdefault((st.st_dev, st.st_ino), rel)
            elif stat.S_ISDIR(mode):
                kind, detail = "dir", None
            elif stat.S_ISLNK(mode):
                kind, detail = "symlink", os.readlink(path)
            elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
                kind = "chr" if stat.S_ISCHR(mode) else "blk"
                detail = (os.major(st.st_rdev), os.minor(st.st_rdev))
            elif stat.S_ISFIFO(mode):
                kind, detail = "fifo", None
            else:
                kind, detail = "other", None
            keep_mtime = mtimes and (kind != "dir" or dir_mtimes) and (kind != "symlink" or symlink_mtimes)
            out[rel] = (kind, stat.S_IMODE(mode) if kind != "symlink" else None, st.st_uid, st.st_gid,
                        int(st.st_mtime) if keep_mtime else None, detail, group)
    return out


def _touch(path, mtime=MTIME):
    os.utime(path, (mtime, mtime), follow_symlinks=False)


def make_sample_tree(root):
    """Every kind of entry newc can carry, with owners, odd modes and hard links across directories."""
    os.makedirs(root / "etc" / "ssh")
    os.makedirs(root / "usr" / "bin")
    os.makedirs(root / "var" / "tmp")
    os.makedirs(root / "dev")
    (root / "etc" / "hosts").write_bytes(b"127.0.0.1 localhost\n")
    (root / "etc" / "empty").write_bytes(b"")
    (root / "etc" / "three").write_bytes(b"abc")            # body needs 1 byte of padding
    (root / "etc" / "ssh" / "key").write_bytes(os.urandom(1000))
    os.chmod(root / "etc" / "ssh" / "key", 0o600)
    os.chown(root / "etc" / "ssh" / "key", 1234, 5678)
    (root / "usr" / "bin" / "big").write_bytes(os.urandom(3 << 20))   # > 1 MiB: direct-copy path
    (root / "usr" / "bin" / "mid").write_bytes(os.urandom(70_001))    # just above the direct-copy floor
    os.chmod(root / "usr" / "bin" / "mid", 0o4755)                    # setuid kept
    # Hard links: one small, one large (data on the last link, via copy_file_range for the large one).
    (root / "usr" / "bin" / "busybox").write_bytes(os.urandom(200_000))
    os.link(root / "usr" / "bin" / "busybox", root / "usr" / "bin" / "sh")
    os.link(root / "usr" / "bin" / "busybox", root / "etc" / "zz-busybox-link")
    (root / "etc" / "small-linked").write_bytes(b"linked\n")
    os.link(root / "etc" / "small-linked", root / "var" / "small-linked")
    os.symlink("hosts", root / "etc" / "hosts.rel")
    os.symlink("/nonexistent/target", root / "etc" / "dangling")
    os.symlink("../usr/bin/busybox", root / "var" / "bb")
    os.mknod(root / "dev" / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    os.mknod(root / "dev" / "sda1", 0o660 | stat.S_IFBLK, os.makedev(8, 1))
    os.mknod(root / "dev" / "ttyS0", 0o620 | stat.S_IFCHR, os.makedev(4, 64))
    os.chown(root / "dev" / "ttyS0", 0, 5)
    os.mkfifo(root / "var" / "fifo", 0o640)
    name = os.fsencode(root / "var") + b"/caf\xc3\xa9 with space"
    with open(name, "wb") as f:
        f.write(b"utf-8 name")
    os.chmod(root / "var" / "tmp", 0o1777)
    os.mkdir(root / "private", 0o700)
    (root / "private" / "x").write_bytes(b"x")
    os.chown(root / "private", 42, 43)
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        for n in filenames + dirnames:
            _touch(os.path.join(dirpath, n), MTIME + len(n))
    return root
