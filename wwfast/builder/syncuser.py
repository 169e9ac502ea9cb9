"""`wwfast image syncuser`: make the image's UIDs and GIDs the server's, by Warewulf's rules.

For passwd and for group alike, every name is looked up in the server's file and the image's:
- a name in both with another id in the image: the image takes the server's id, and every entry of
  the tree owned by the image's old id is given the new one (one walk with the whole old → new
  map, so swapped ids land right);
- a name only in the image is kept, with its id, unless that id is the server's id of another
  name: that is a conflict nobody can settle automatically, and nothing is changed (add the name
  on the server, as Warewulf's message says);
- the image's file becomes the server's file followed by the image's lines of names only it has.
Compat lines (`+`/`-`, NIS), blank and malformed lines are skipped when reading, as Warewulf does.

Differences from Warewulf, on purpose: owners are changed with lchown (a symlink is never
followed, so nothing outside the tree is touched), the setuid/setgid bits the kernel clears on
chown are put back, and the change is made on a copy swapped in as a whole (image_admin.change).
"""
import os
import stat

from wwfast import fsutil
from wwfast.errors import UsageError


class SyncError(UsageError):
    pass


def read_ids(path):
    """{name: id} and the raw lines of a passwd or group file (first id of a name wins)."""
    ids, lines = {}, []
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            text = f.read()
    except FileNotFoundError:
        return ids, lines
    for line in text.splitlines():
        lines.append(line)
        fields = line.split(":")
        if len(fields) not in (4, 7) or not fields[0] or fields[0][0] in "+-":
            continue
        try:
            ids.setdefault(fields[0], int(fields[2]))
        except ValueError:
            continue
    return ids, lines


def plan(server, image, what):
    """{image id: server id} to apply; raises SyncError on a conflict."""
    taken = {sid: name for name, sid in server.items()}
    for name, iid in image.items():
        if name not in server and iid in taken:
            raise SyncError(f"{what}: id {iid} is {taken[iid]!r} on the server but {name!r} in the image, and "
                            f"{name!r} does not exist on the server: add {name!r} on the server and run again")
    return {iid: server[name] for name, iid in image.items() if name in server and server[name] != iid}


def merged_lines(server_lines, image_lines, server):
    """The server's file, then the image's lines whose name the server lacks."""
    extra = [ln for ln in image_lines if ln.split(":")[0] and ln.split(":")[0] not in server
             and len(ln.split(":")) in (4, 7) and ln[0] not in "+-"]
    return server_lines + extra


def chown_tree(root, uid_map, gid_map):
    """Apply the id maps to every entry under root (root included); returns how many changed."""
    changed = 0
    for dirpath, dirnames, filenames in os.walk(root):
        paths = [dirpath] if dirpath == root else []
        paths += [os.path.join(dirpath, n) for n in dirnames + filenames]
        for path in paths:
            st = os.lstat(path)
            uid, gid = uid_map.get(st.st_uid, st.st_uid), gid_map.get(st.st_gid, st.st_gid)
            if (uid, gid) == (st.st_uid, st.st_gid):
                continue
            os.lchown(path, uid, gid)
            if not stat.S_ISLNK(st.st_mode) and st.st_mode & (stat.S_ISUID | stat.S_ISGID):
                os.chmod(path, stat.S_IMODE(st.st_mode))   # chown cleared them
            changed += 1
    return changed


def sync(rootfs, server_etc="/etc", write=True, log=print):
    """Align rootfs with the server's passwd/group; returns a summary dict (nothing written when
    write is False)."""
    summary = {}
    maps = {}
    files = {}
    for what in ("passwd", "group"):
        server, server_lines = read_ids(os.path.join(server_etc, what))
        if not server:
            raise SyncError(f"{os.path.join(server_etc, what)}: no entries to align with")
        image_path = fsutil.resolve_in_root(rootfs, f"/etc/{what}")   # a symlink never leads out
        image, image_lines = read_ids(image_path)
        maps[what] = plan(server, image, what)
        files[what] = (image_path, merged_lines(server_lines, image_lines, server))
        summary[what] = {"remapped": {n: [image[n], server[n]] for n in image if n in server and image[n] != server[n]},
                         "server_only": sorted(set(server) - set(image)),
                         "image_only": sorted(set(image) - set(server))}
        for name, (old, new) in sorted(summary[what]["remapped"].items()):
            log(f"syncuser: {what}: {name} {old} -> {new}")
    needed = any(maps.values()) or any(summary[w]["server_only"] for w in summary)
    if not write:
        log("syncuser: " + ("ids differ: run without --write=false to align them" if needed else "already in sync"))
        return summary
    summary["entries_changed"] = chown_tree(rootfs, maps["passwd"], maps["group"])
    for what, (path, lines) in files.items():
        os.makedirs(os.path.dirname(path), exist_ok=True)
        mode = stat.S_IMODE(os.lstat(path).st_mode) if os.path.exists(path) else 0o644
        tmp = path + ".wwfast-new"
        with open(tmp, "w", encoding="utf-8", errors="surrogateescape") as f:
            f.write("\n".join(lines) + "\n")
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    log(f"syncuser: {summary['entries_changed']} entries re-owned; passwd and group aligned with {server_etc}")
    return summary
