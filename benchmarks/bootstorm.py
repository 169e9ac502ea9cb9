"""Boot storm: N simulated nodes power on at once and boot from wwfast serve, then from the classic
stack (tftp-hpa in.tftpd + nginx) serving the very same files on the same address and ports.

Each node has its own MAC and IP address in a rack network namespace and does what a real node does
with what wwfast built for it (benchmarks/storm/plan.py): TFTP of the iPXE binary, its iPXE script,
the script's kernel and initrds over one keep-alive connection, then the node agent's runtime overlay
fetch (from a privileged port in secure mode). Every byte is checked against the manifest's sha256.
The nodes run in a compiled load generator (benchmarks/storm_client.c, several processes) whose own
CPU is reported beside the servers'. wwfast's own view (/status, boot records) is compared with the
nodes' node for node. Prints and records (benchmarks/results/bootstorm.json, harness format) the
time until all nodes booted, per-node completion percentiles, failures, retries, bytes, goodput,
server CPU and peak RSS, the ratio classic/wwfast, and draws benchmarks/results/bootstorm.png.

    sudo .venv/bin/python benchmarks/bootstorm.py [--nodes 1000] [--image-mb 16] [--loss 2] [--rate 10gbit]
        [--stagger 30] [--windowsize 4] [--workers 2] [--stacks wwfast,classic] [--quick] [--runs 3]
        [--baseline DIR]
With --baseline DIR (a checkout of earlier code with its .venv and Cython modules built, e.g.
`git worktree add /tmp/base main; make -C /tmp/base setup`) its serve runs in the same rounds as the
stack "baseline": before/after on one load, reported against it as well as against the classic stack.
Goals (issue 13): 1,000 nodes, wwfast >= 2x faster than the classic stack to all booted, 0 failures;
0 failures with 2% loss.
"""
import argparse
import os
import pathlib
import shutil
import signal
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import harness  # noqa: E402
from wwfast import layout  # noqa: E402
from storm import cluster, loadgen, plan, report, views  # noqa: E402
from storm.stacks import ClassicStack, WwfastStack  # noqa: E402
from storm.topology import LinkShape, Topology  # noqa: E402

WORK = pathlib.Path(os.environ.get("WWFAST_BOOTSTORM_DIR", "/var/tmp/wwfast-bootstorm"))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--nodes", type=int, help="simulated nodes (default 1000; quick 200)")
    p.add_argument("--image-mb", type=float, help="image archive size in MiB (default 16; quick 8); it also holds "
                                                  "the kernel (8 MB) and busybox, the rest is random filler")
    p.add_argument("--racks", type=int, default=1, help="rack namespaces the nodes are spread over")
    p.add_argument("--stagger", type=float, default=0.0, help="power nodes on evenly over this many seconds")
    p.add_argument("--loss", type=float, default=0.0, help="packet loss, %% each way on the server link (netem)")
    p.add_argument("--delay-ms", type=float, default=0.0, help="one-way delay on the server link (netem)")
    p.add_argument("--rate", help="server link rate cap (tbf), e.g. 1gbit or 10gbit")
    p.add_argument("--rack-rate", help="rate cap of each rack's uplink (tbf)")
    p.add_argument("--windowsize", type=int, default=1, choices=(1, 4),
                   help="TFTP windowsize the firmware asks: 1 = lock-step as iPXE, 4 as EDK2 UEFI")
    p.add_argument("--nbp", default="ipxe.efi", help="iPXE binary fetched over TFTP (from /usr/lib/ipxe)")
    p.add_argument("--insecure", action="store_true", help="secure mode off (runtime overlay via iPXE too)")
    p.add_argument("--stacks", default="wwfast,classic", help="wwfast, classic, wwfast-Nw (serve --workers N)")
    p.add_argument("--client-procs", type=int, default=None, help="load generator processes per rack "
                                                                  "(default: CPU count)")
    p.add_argument("--plot", type=pathlib.Path, default=HERE / "results" / "bootstorm.png")
    p.add_argument("--no-plot", action="store_true")
    p.add_argument("--name", default="bootstorm", help="result name (benchmarks/results/NAME.json)")
    p.add_argument("--work", type=pathlib.Path, default=WORK, help="state cache and run files")
    p.add_argument("--baseline", type=pathlib.Path, help="a checkout of earlier code (its .venv built): its serve "
                                                         "runs in the same rounds as the stack 'baseline'")
    harness.add_arguments(p, runs=3, warmup=1)
    args = p.parse_args(argv)
    harness.settle(args, nodes=(1000, 200), image_mb=(16, 8))
    args.client_procs = args.client_procs or os.cpu_count() or 1
    return args


def make_stacks(args, topo, run_dir, conf, state, tftp_root, manifest):
    stacks = {}
    for name in args.stacks.split(","):
        if name == "classic":
            stacks[name] = ClassicStack(topo, 0, run_dir, manifest, layout.store_dir(state), tftp_root)
        elif name == "wwfast" or name.startswith("wwfast-"):
            workers = int(name.split("-")[1].rstrip("w")) if "-" in name else None
            if workers and not WwfastStack.supports_workers():
                print(f"# {name}: serve has no --workers yet; skipped")
                continue
            stacks[name] = WwfastStack(topo, 0, run_dir, conf, state, tftp_root, workers)
        else:
            raise SystemExit(f"unknown stack {name!r}")
    if args.baseline:
        stacks["baseline"] = WwfastStack(topo, 0, run_dir, conf, state, tftp_root, tree=args.baseline.resolve())
    return stacks


def plan_shards(args, topo, manifest, state, tftp_root, run_dir):
    """Per-node steps, and plan files: client_procs per rack. Returns (nodes meta, starts, shards, refs)."""
    refs = plan.References()
    server = topo.server_addresses(0)[0]
    nodes, starts = [], {}
    for i, node_id in enumerate(sorted(manifest.nodes)):
        steps = plan.node_steps(i, manifest.nodes[node_id], layout.store_dir(state), refs, server,
                                cluster.HTTP_PORT, str(tftp_root / args.nbp), args.nbp, args.windowsize)
        nodes.append((i, node_id, topo.node_address(i), steps, refs.paths))
        starts[i] = args.stagger * i / max(1, args.nodes - 1) if args.stagger else 0.0
    shards = []
    for k in range(topo.racks):
        members = list(topo.rack_nodes(k))
        for p in range(args.client_procs):
            share = members[p::args.client_procs]
            if share:
                shards.append((topo.rack_ns(k), [(i, nodes[i][2], round(starts[i] * 1000), nodes[i][3]) for i in share]))
    return nodes, starts, shards, refs


def one_storm(stack, binary, shards, refs, run_dir, storm_no, args, node_ids):
    """Start `stack`, boot every node once, read its view, stop it. Returns (figures, load, view)."""
    files = []
    for j, (ns, members) in enumerate(shards):
        path = run_dir / f"plan-{j}.txt"
        # a fresh privileged port per storm: the last storm's connection may still be in TIME_WAIT
        plan.write_plan(path, members, refs, {"stall_ms": 120000, "max_attempts": 10,
                                               "priv_port": 1023 - (storm_no * 7) % 400})
        files.append((ns, path))
    stack.start()
    try:
        stack.wait_ready(wait_path(stack, shards), args.nbp)
        stack.group.start_sampling()
        cpu0, tcp0 = stack.group.cpu_seconds(), stack.topo.tcp_counters()
        load = loadgen.run(binary, files, run_dir)
        cpu = stack.group.cpu_seconds() - cpu0
        load.tcp = {k: v - tcp0.get(k, 0) for k, v in stack.topo.tcp_counters().items()}
        rss = stack.group.peak_rss_mb()
        view = None
        load.tftp_server = {}
        if isinstance(stack, WwfastStack):
            view = ("wwfast", views.fetch_wwfast(stack.topo, stack.ns, stack.address, cluster.HTTP_PORT,
                                                 node_ids, str(run_dir / "status.json")))
            load.tftp_server = stack.serve_counters(run_dir / "metrics.txt")
    finally:
        stack.stop()
    if isinstance(stack, ClassicStack):
        view = ("classic", stack.access_log())
    return cpu, rss, load, view


def wait_path(stack, shards):
    first = shards[0][1][0][3]
    return next(s.args[1] for s in first if s.label == "ipxe")



def main(argv=None):
    args = parse_args(argv)
    # SIGTERM (a timeout, a CI run ending) unwinds like ^C: servers stopped, namespaces deleted
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if os.geteuid() != 0:
        sys.exit("bootstorm needs root (network namespaces, tc, privileged source ports)")
    tag = f"wws{os.getpid()}"
    shape = LinkShape(rate=args.rate, loss=args.loss, delay_ms=args.delay_ms)
    topo = Topology(tag, nodes=args.nodes, racks=args.racks, server_link=shape,
                    rack_link=LinkShape(rate=args.rack_rate))
    spec = cluster.ClusterSpec(args.nodes, args.image_mb, not args.insecure,
                               [topo.node_address(i) for i in range(args.nodes)], topo.server_addresses(0)[0],
                               args.nbp)
    args.work.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    base, conf, state, tftp_root, manifest = cluster.prepare(args.work, spec)
    print(f"# published {len(manifest.nodes)} nodes under {base} ({time.monotonic() - started:.1f} s)")
    run_dir = base / f"run-{os.getpid()}"
    run_dir.mkdir()
    binary = loadgen.build(args.work)
    nodes, starts, shards, refs = plan_shards(args, topo, manifest, state, tftp_root, run_dir)
    per_node = sum(os.path.getsize(refs.paths[s.ref]) for s in nodes[0][3])
    print(f"# {args.nodes} nodes, {per_node / 1e6:.1f} MB each ({', '.join(s.label for s in nodes[0][3])}); "
          f"{len(shards)} load generator processes; {args.warmup} warm-up + {args.runs} runs per stack")
    samples, panels = {}, {}
    try:
        with topo:
            print(f"# topology: {topo.describe()}")
            stacks = make_stacks(args, topo, run_dir, conf, state, tftp_root, manifest)
            storm_no = 0
            for round_no in range(args.warmup + args.runs):
                names = list(stacks)
                names = names[round_no % len(names):] + names[:round_no % len(names)]
                for name in names:
                    storm_no += 1
                    cpu, rss, load, view = one_storm(stacks[name], binary, shards, refs, run_dir, storm_no, args,
                                                          [n[1] for n in nodes])
                    figures = report.summarise(load, starts)
                    figures.update(server_cpu_s=cpu, server_peak_rss_mb=rss, wall=figures["last_booted_s"], cpu=cpu,
                                   tcp=load.tcp, tftp_server=load.tftp_server)
                    for event in ("retransmits", "dupack_resends", "duplicate_acks", "expired"):
                        if event in load.tftp_server:
                            figures[f"server_tftp_{event}"] = load.tftp_server[event]
                    for by in ("worker", "supervisor"):
                        figures[f"server_pin_{by}"] = load.tftp_server.get(f"pin_{by}", 0)
                    figures["view"] = compare(view, nodes, load)
                    tag_text = "warm-up" if round_no < args.warmup else f"run {round_no - args.warmup + 1}"
                    print_run(tag_text, name, figures)
                    if round_no >= args.warmup:
                        samples.setdefault(name, []).append(harness.Sample(figures))
                        runs = samples[name]
                        if figures["last_booted_s"] == sorted(r["last_booted_s"] for r in runs)[(len(runs) - 1) // 2]:
                            panels[name] = (name, load, starts, figures)
    finally:
        if "keep" not in os.environ.get("WWFAST_BOOTSTORM", ""):
            shutil.rmtree(run_dir, ignore_errors=True)
    result = record(args, samples, stacks, shape, topo, per_node)
    if not args.no_plot and panels:
        try:
            report.plot([panels[n] for n in stacks if n in panels], args.plot,
                        f"{args.nodes} nodes, {per_node / 1e6:.1f} MB each, {shape.describe()}, "
                        f"TFTP {'lock-step' if args.windowsize == 1 else 'windowsize 4'}; median run")
            print(f"plot: {args.plot}")
        except ImportError:
            print("plot: matplotlib is not installed (pip install -e '.[bench]')")
    return result


def compare(view, nodes, load):
    if view is None:
        return None
    kind, data = view
    by_node = load.by_node()
    return views.compare_wwfast(nodes, by_node, data) if kind == "wwfast" else views.compare_nginx(nodes, by_node, data)


def print_run(tag, name, f):
    booted = f"{f['all_booted_s']:.2f} s" if f["all_booted_s"] is not None else "NOT ALL BOOTED"
    v = f["view"]
    print(f"  {tag:8s} {name:12s} all booted {booted}; p50 {f['p50_s'] or 0:.2f} p99 {f['p99_s'] or 0:.2f} "
          f"max {f['max_s'] or 0:.2f} s; failed {f['failed']}, retries {f['retries']}, TFTP retransmits "
          f"{f['tftp_retransmits']}; {f['goodput_MBps'] or 0:.0f} MB/s; server cpu {f['server_cpu_s']:.1f} s, "
          f"rss {f['server_peak_rss_mb']:.0f} MB; clients cpu {f['client_cpu_s']:.1f} s; TCP timeouts "
          f"{f['tcp'].get('TcpExtTCPTimeouts', 0)}, memory-pressure drops {f['tcp'].get('TcpExtTCPRcvQDrop', 0)}, "
          f"backlog drops {f['tcp'].get('SoftnetBacklogDrops', 0)}; "
          + (f"retry reasons {f['retry_reasons']}; " if f.get("retry_reasons") else "")
          + (f"server TFTP resends: timer {f['server_tftp_retransmits']}, "
             f"re-ACK {f.get('server_tftp_dupack_resends', '-')}; " if "server_tftp_retransmits" in f else "")
          + "view "
          + (f"{v['agree']}/{v['nodes']} agree" if v else "-"), flush=True)


def add_rows(result, args, shape, name, ours, peer_name, peer):
    """The table's rows of stack `name` against `peer_name` (classic, or the baseline checkout)."""
    goal_time = 2.0 if args.nodes >= 1000 and not shape and not args.rack_rate else None
    result.add("time until all nodes booted", ours, peer, peer_name=peer_name, ours_name=name,
               key="last_booted_s", goal=goal_time, cpu=True)
    for q in ("p50_s", "p99_s", "max_s"):
        result.add(f"per-node completion {q[:-2]}", ours, peer, peer_name=peer_name, ours_name=name, key=q)
    result.add("failed nodes", ours, peer, peer_name=peer_name, ours_name=name, key="failed", unit="nodes",
               limit=0)
    result.add("retries (failed attempts)", ours, peer, peer_name=peer_name, ours_name=name, key="retries",
               unit="attempts")
    result.add("server CPU seconds", ours, peer, peer_name=peer_name, ours_name=name, key="server_cpu_s")
    result.add("server peak RSS", ours, peer, peer_name=peer_name, ours_name=name, key="server_peak_rss_mb",
               unit="MB")
    result.add("goodput", ours, peer, peer_name=peer_name, ours_name=name, key="goodput_MBps", unit="MB/s",
               better="higher")
    result.add("load generator CPU seconds", ours, peer, peer_name=peer_name, ours_name=name,
               key="client_cpu_s", note="the nodes' own CPU: compare with the servers'")
    for stage in report.STAGES:
        if ours[0].get(f"stage_{stage}_s") is not None:
            result.add(f"mean time per node in stage {stage}", ours, peer, peer_name=peer_name, ours_name=name,
                       key=f"stage_{stage}_s")
    for by in ("worker", "supervisor"):                 # serve --workers: who chose each node request's catalog
        if ours[0].get(f"server_pin_{by}"):
            result.add(f"node requests whose catalog the {by} chose (its own count)", ours, None,
                       ours_name=name, key=f"server_pin_{by}", unit="requests")
    for event in ("retransmits", "dupack_resends"):      # serve's own count (/metrics); in.tftpd has none
        key = f"server_tftp_{event}"
        if ours[0].get(key) is not None:
            theirs = peer if peer and peer[0].get(key) is not None else None
            result.add(f"server TFTP {event} (its own count)", ours, theirs, peer_name=peer_name, ours_name=name,
                       key=key, unit="packets")


def record(args, samples, stacks, shape, topo, per_node):
    params = harness.params_of(args)
    params.update(link=shape.describe(), mb_per_node=round(per_node / 1e6, 2))
    result = harness.Result(args.name, "boot storm to all nodes booted: wwfast serve vs tftp-hpa + nginx",
                            params=params, quick=args.quick, tools=("nginx", "in.tftpd", "gcc"))
    pairs = [(name, "classic") for name in stacks if name not in ("classic", "baseline") and name in samples]
    pairs += [(name, "baseline") for name in stacks if name not in ("classic", "baseline") and name in samples
              and "baseline" in samples]
    for name, peer_name in pairs:
        add_rows(result, args, shape, name, samples[name], peer_name, samples.get(peer_name))
    failures = {n: [r["failed"] for r in rs] for n, rs in samples.items()}
    result.detail("failures_per_run", failures)
    result.detail("views", {n: [r["view"] for r in rs] for n, rs in samples.items()})
    result.detail("runs", {n: [{k: v for k, v in r.items() if k != "view"} for r in rs] for n, rs in samples.items()})
    result.detail("topology", topo.describe())
    path = result.write(args.results)
    bad_views = sum(r["view"]["disagreeing"] for rs in samples.values() for r in rs if r.get("view"))
    total_failed = sum(sum(v) for v in failures.values())
    print(f"failures: {total_failed}; nodes whose server view disagrees: {bad_views}")
    return {"path": str(path), "failed": total_failed, "disagree": bad_views, "doc": result.doc}


if __name__ == "__main__":
    out = main()
    sys.exit(1 if out["failed"] or out["disagree"] else 0)
