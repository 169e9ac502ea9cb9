"""Run one job per node with at most `fanout` at once; results come back as each job ends.

A slow or dead node holds one slot until its own timeout, never the others: the jobs are threads
blocked in their child process (ipmitool), so the slots are cheap and the order is completion order.
"""
from concurrent.futures import ThreadPoolExecutor, as_completed

DEFAULT_FANOUT = 50


def run_all(items, job, fanout=DEFAULT_FANOUT, on_result=None):
    """[job(item) for item in items], run `fanout` at a time; on_result(result) as each one ends."""
    items = list(items)
    if not items:
        return []
    if fanout < 1:
        raise ValueError("fanout must be at least 1")
    results = []
    pool = ThreadPoolExecutor(max_workers=min(fanout, len(items)), thread_name_prefix="fanout")
    try:
        futures = [pool.submit(job, item) for item in items]
        for future in as_completed(futures):
            result = future.result()
            results.append(result)
            if on_result is not None:
                on_result(result)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # Ctrl-C: queued jobs never start
    return results
