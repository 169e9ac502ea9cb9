"""Figures of one storm run from the nodes' own records, and the picture of the storm.

Per run: time until every node booted (its last request done: the node agent's runtime overlay),
per-node completion (from its power-on) p50/p95/p99/max, nodes booted and failed, retries (failed
attempts the nodes repeated), TFTP retransmissions, bytes and goodput, and the mean time per stage.
The picture: nodes against time, coloured by the stage each node is in, one panel per stack.
"""
import numpy as np

STAGES = ("nbp", "ipxe", "kernel", "image", "system", "runtime", "agent")
COLOURS = {"waiting": "#e0e0e0", "nbp": "#4c72b0", "ipxe": "#8172b2", "kernel": "#dd8452", "image": "#c44e52",
           "system": "#937860", "runtime": "#da8bc3", "agent": "#ccb974", "booted": "#55a868", "failed": "#000000"}
LABELS = {"nbp": "TFTP iPXE binary", "ipxe": "iPXE script", "kernel": "kernel", "image": "image",
          "system": "system overlay", "runtime": "runtime overlay (iPXE)", "agent": "runtime overlay (agent)",
          "booted": "booted", "failed": "failed", "waiting": "powered off"}


def summarise(load, starts):
    """`starts`: {node index: power-on time offset (s)}. Returns the run's figures (dict)."""
    by_node = load.by_node()
    done, failed, retries, retransmits, nbytes = [], 0, 0, 0, 0
    reasons = {}
    stage_time = {s: [] for s in STAGES}
    last_end = load.t0
    for node, offset in starts.items():
        attempts = by_node.get(node, [])
        retries += sum(1 for a in attempts if a.result != "ok")
        for a in attempts:
            if a.result != "ok":
                reasons[f"{a.label}:{a.result}"] = reasons.get(f"{a.label}:{a.result}", 0) + 1
        retransmits += sum(a.extra for a in attempts if a.label == "nbp")
        nbytes += sum(a.bytes for a in attempts if a.result == "ok")
        for a in attempts:
            if a.result == "ok" and a.label in stage_time:
                stage_time[a.label].append(a.end - a.start)
        if attempts and attempts[-1].result == "ok" and attempts[-1].label == "agent":
            done.append(attempts[-1].end - (load.t0 + offset))
            last_end = max(last_end, attempts[-1].end)
        else:
            failed += 1
    all_booted = last_end - load.t0 if not failed else None
    pct = (lambda q: float(np.percentile(done, q))) if done else (lambda q: None)
    return {"nodes": len(starts), "booted": len(done), "failed": failed, "retries": retries, "retry_reasons": reasons,
            "tftp_retransmits": retransmits, "all_booted_s": all_booted, "last_booted_s": last_end - load.t0,
            "p50_s": pct(50), "p95_s": pct(95), "p99_s": pct(99), "max_s": max(done) if done else None,
            "bytes": nbytes, "goodput_MBps": nbytes / 1e6 / (last_end - load.t0) if last_end > load.t0 else None,
            **{f"stage_{s}_s": (float(np.mean(v)) if v else None) for s, v in stage_time.items()},
            "client_cpu_s": load.cpu_seconds, "client_processes": len(load.summaries),
            "slowest": slowest(load, starts)}


def slowest(load, starts, k=3):
    """The k nodes that finished last, each step as [label, start after power-on, seconds, result, extra]:
    where a tail comes from (a stage, a retry, a retransmission) is read off the record, not guessed."""
    by_node = load.by_node()

    def finish(node):
        attempts = by_node.get(node, [])
        return attempts[-1].end if attempts else float("inf")
    out = []
    for node in sorted(starts, key=finish, reverse=True)[:k]:
        t0 = load.t0 + starts[node]
        out.append({"node": node, "steps": [[a.label, round(a.start - t0, 3), round(a.end - a.start, 3), a.result,
                                             a.extra] for a in by_node.get(node, [])]})
    return out


def occupancy(load, starts, grid):
    """{state: counts over `grid` (s after T0)}: how many nodes are in each stage at each instant."""
    by_node = load.by_node()
    counts = {k: np.zeros(len(grid)) for k in ("waiting", *STAGES, "booted", "failed")}
    for node, offset in starts.items():
        attempts = by_node.get(node, [])
        state = np.full(len(grid), "waiting", dtype=object)
        for a in attempts:
            lo, hi = np.searchsorted(grid, [a.start - load.t0, a.end - load.t0])
            state[lo:hi] = a.label
        if attempts:
            end = np.searchsorted(grid, attempts[-1].end - load.t0)
            ok = attempts[-1].result == "ok" and attempts[-1].label == "agent"
            state[end:] = "booted" if ok else "failed"
        for key in counts:
            counts[key] += state == key
    return counts


def plot(panels, path, title):
    """`panels`: [(name, load, starts, figures)]; one stacked-area panel per stack, same time axis."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    horizon = max((f["last_booted_s"] for _, _, _, f in panels), default=1.0) * 1.05 + 0.1
    grid = np.linspace(0, horizon, 600)
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.2), sharey=True, squeeze=False)
    for ax, (name, load, starts, figures) in zip(axes[0], panels):
        counts = occupancy(load, starts, grid)
        order = ("booted", *reversed(STAGES), "waiting", "failed")
        ax.stackplot(grid, [counts[k] for k in order], colors=[COLOURS[k] for k in order],
                     labels=[LABELS[k] for k in order], linewidth=0)
        booted = figures["all_booted_s"]
        ax.set_title(f"{name}: all {figures['nodes']} booted in {booted:.1f} s" if booted is not None
                     else f"{name}: {figures['failed']} of {figures['nodes']} failed")
        ax.set_xlabel("seconds since power-on")
        ax.set_xlim(0, horizon)
        ax.set_ylim(0, figures["nodes"])
    axes[0][0].set_ylabel("nodes")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles[::-1], labels[::-1], loc="center right", fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0, 0.84, 0.95))
    fig.savefig(path, dpi=90)
    plt.close(fig)
