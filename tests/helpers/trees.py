"""Snapshot a directory tree as comparable data: what an extracted archive must reproduce."""
import hashlib
import os
import stat


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
