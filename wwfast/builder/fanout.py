"""Per-node build work on every core: forked workers that inherit what the parent prepared.

The parent compiles what all nodes share (templates, node views, shared renders) and then calls
map_split(); each worker is a fork of it, so nothing is pickled on the way in, and it runs fn on its
share of the items. Only the results come back. An error in a worker comes back as its class and
constructor arguments and is raised again in the parent, message intact.
"""
import os

# Below this many items one process does the work: forking and collecting cost more than they save.
MIN_ITEMS = 400

_TASK = None   # (fn, errors) while map_split runs: what the forked workers find


class _Failure:
    def __init__(self, cls, args):
        self.cls, self.args = cls, args


def workers_for(count, workers=None):
    """How many processes to use for `count` items (1: do it here, no fork)."""
    workers = workers or os.cpu_count() or 1
    return 1 if count < MIN_ITEMS else max(1, min(workers, count))


def map_split(fn, items, workers, errors=None):
    """[fn(share) for each worker's share of `items`], run in `workers` forked processes.

    Items are dealt round-robin (neighbouring nodes cost alike, so shares cost alike). `errors` maps an
    exception class to a function giving its constructor arguments, for the errors that must reach the
    caller as they are (built from several fields, they would not survive pickling); other exceptions
    come back through multiprocessing's own pickling.
    """
    global _TASK
    shares = [items[i::workers] for i in range(workers)]
    if workers <= 1:
        return [fn(items)]
    import multiprocessing   # only when there is something to share out
    _TASK = (fn, errors or {})
    try:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            results = pool.map(_run, shares, chunksize=1)
    finally:
        _TASK = None
    for result in results:
        if isinstance(result, _Failure):
            raise result.cls(*result.args)
    return results


def _run(share):
    fn, errors = _TASK
    try:
        return fn(share)
    except tuple(errors) as e:
        cls = next(c for c in errors if isinstance(e, c))
        return _Failure(cls, errors[cls](e))
