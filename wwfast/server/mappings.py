"""Read-only mappings of store files for `send_mode="mmap"`, one per file shared by all connections
(a mapping per connection would count the file once per client in RSS)."""
import mmap
import os


class SharedMappings:
    def __init__(self):
        self._maps = {}

    def view(self, fd):
        """A read-only memoryview of the file behind `fd`."""
        st = os.fstat(fd)
        key = (st.st_dev, st.st_ino, st.st_size)
        view = self._maps.get(key)
        if view is None:
            view = self._maps[key] = memoryview(mmap.mmap(fd, 0, prot=mmap.PROT_READ))
        return view

    def keep_only(self, catalog):
        """Drop mappings of files no longer in `catalog` (transfers still using one keep a reference)."""
        if not self._maps:
            return
        keep = set()
        for node in catalog.nodes.values():
            for encodings in node.artifacts.values():
                for artifact in encodings.values():
                    try:
                        st = os.stat(artifact.path)
                    except OSError:
                        continue
                    keep.add((st.st_dev, st.st_ino, st.st_size))
        for key in [k for k in self._maps if k not in keep]:
            del self._maps[key]
