"""Pick nodes by command-line patterns: hostlists (n[01-10]), shell globs (rack1-*), or both.

    select(["n[1-3]", "gpu*"], all_ids) -> ids in the order of all_ids

A plain name or a hostlist must name existing nodes; a glob may match none, but the whole selection
must not be empty. Warewulf's commands take the same kinds of patterns.
"""
import fnmatch

from wwfast.define import hostlist
from wwfast.errors import UsageError

_GLOB = set("*?")


def select(patterns, all_ids):
    all_ids = list(all_ids)
    known = set(all_ids)
    wanted, missing = set(), []
    for pattern in patterns:
        try:
            names = hostlist.expand(pattern)
        except hostlist.HostlistError as e:
            raise UsageError(f"bad node pattern: {e}") from None
        for name in names:
            if _GLOB & set(name):
                wanted.update(fnmatch.filter(all_ids, name))
            elif name in known:
                wanted.add(name)
            else:
                missing.append(name)
    if missing:
        raise UsageError(f"no such node: {hostlist.compress(missing)}")
    if not wanted:
        raise UsageError(f"no node matches {' '.join(patterns)}")
    return [i for i in all_ids if i in wanted]
