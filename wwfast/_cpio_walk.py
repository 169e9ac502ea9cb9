"""The tree walk both newc writer twins archive: which entries, in which order.

Order: depth first, each directory's names sorted by their bytes, a directory before its
contents (the kernel needs parents first). The root itself is not an entry: names are
root-relative, and an overlay's temp dir must not set the mode of the node's '/'.
"""
import os
import stat

from wwfast._cpio_common import MAX_FILE_SIZE, CpioError, FileTooLarge, as_excludes


def scan_tree(root, excludes=(), one_file_system=True):
    """Return [(relname: bytes, path: bytes, stat_result)] for every entry under `root`.

    Excluded paths (Warewulf rules) are left out with their subtree. With one_file_system a
    mount point inside the tree is kept as an empty directory but not entered, and other
    cross-device entries are left out. A regular file of 4 GiB or more raises FileTooLarge
    before anything is written.
    """
    root = os.fsencode(root)
    matcher = as_excludes(excludes)
    try:
        root_st = os.stat(root)
    except OSError as e:
        raise CpioError(f"{os.fsdecode(root)}: cannot read the tree: {e.strerror}") from None
    if not stat.S_ISDIR(root_st.st_mode):
        raise CpioError(f"{os.fsdecode(root)}: not a directory")
    root_dev = root_st.st_dev if one_file_system else None
    result = []
    # Pre-order DFS over a stack of child iterators (no recursion: trees can be deep).
    stack = [iter(_children(root, b"", matcher, root_dev))]
    while stack:
        for rel, path, st, descend in stack[-1]:
            result.append((rel, path, st))
            if descend:
                stack.append(iter(_children(path, rel + b"/", matcher, root_dev)))
                break
        else:
            stack.pop()
    return result


def _children(dirpath, prefix, matcher, root_dev):
    try:
        with os.scandir(dirpath) as it:
            children = sorted(it, key=_name)
    except OSError as e:
        raise CpioError(f"{os.fsdecode(dirpath)}: cannot list directory: {e.strerror}") from None
    out = []
    for child in children:
        rel = prefix + child.name
        if matcher and matcher.match(rel):
            continue
        try:
            st = child.stat(follow_symlinks=False)
        except OSError as e:
            raise CpioError(f"{os.fsdecode(child.path)}: cannot stat: {e.strerror}") from None
        mode = st.st_mode
        if root_dev is not None and st.st_dev != root_dev:
            if stat.S_ISDIR(mode):
                out.append((rel, child.path, st, False))  # the mount point itself, kept empty
            continue
        if stat.S_ISREG(mode) and st.st_size > MAX_FILE_SIZE:
            raise FileTooLarge(child.path, st.st_size)
        out.append((rel, child.path, st, stat.S_ISDIR(mode)))
    return out


def _name(entry):
    return entry.name


def link_groups(entries):
    """Hard-linked regular files among `entries`: {index: [indexes of the same inode]}.

    Only links inside the archive count (an excluded link is not waited for). As GNU cpio
    and gen_init_cpio do, the data goes with the last link of a group.
    """
    groups = {}
    for i, (_rel, _path, st) in enumerate(entries):
        if st.st_nlink > 1 and stat.S_ISREG(st.st_mode):
            groups.setdefault((st.st_dev, st.st_ino), []).append(i)
    return {i: g for g in groups.values() if len(g) > 1 for i in g}
