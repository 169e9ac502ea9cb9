"""Store files no published manifest names any more: kept for a grace period (a node that fetched the old
manifest still downloads them), then deleted; and the temp files a killed run left.
"""
import contextlib
import os
import time

from wwfast import layout
from wwfast.publish.store import TEMP_PREFIX, TEMP_SUFFIX

GRACE_SECONDS = 600


def collect_garbage(state_dir, referenced, memory, grace=GRACE_SECONDS, now=None):
    """Remove temp files of killed runs, and store files not in `referenced` (the names the
    published manifest holds) for `grace` seconds.

    Call with the lock held. Updates memory["retired"] ({name: time first seen unreferenced});
    returns the names removed.
    """
    now = time.time() if now is None else now
    referenced = set(referenced)
    retired = dict(memory.get("retired", {}))
    removed = []
    store = layout.store_dir(state_dir)
    for directory in (store, layout.publish_dir(state_dir)):
        with contextlib.suppress(FileNotFoundError):
            for name in os.listdir(directory):
                if name.startswith(TEMP_PREFIX) and name.endswith(TEMP_SUFFIX):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(os.path.join(directory, name))
    present = set()
    with contextlib.suppress(FileNotFoundError):
        present = {n for n in os.listdir(store) if not n.startswith(TEMP_PREFIX)}
    for name in sorted(present - referenced):
        since = retired.setdefault(name, now)
        if now - since >= grace:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(store, name))
            del retired[name]
            removed.append(name)
    memory["retired"] = {n: t for n, t in retired.items() if n in present and n not in referenced}
    return removed
