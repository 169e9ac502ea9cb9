"""The one pattern every benchmark follows, and the summary of them all.

A benchmark measures wwfast and its peer in the same run (interleaved, so a shared machine's load
falls on both alike), after a warm-up, several times; it records per measure the median with min
and max of each side, CPU seconds beside wall time, and the ratio (how many times better wwfast
is: peer/ours for times, ours/peer for rates). `Result.write()` puts that, the parameters and the
machine's facts (CPU count, kernel, load, package versions) in benchmarks/results/<bench>.json.

    result = harness.Result("bench_x", "what it measures", params=vars(args), quick=args.quick)
    samples = harness.interleave({"wwfast": ours, "peer": theirs}, runs=args.runs, warmup=args.warmup)
    result.add("pack 1 GB tree", samples["wwfast"], samples["peer"], peer_name="GNU cpio", goal=5)
    result.write()

`python benchmarks/harness.py summary` (run by `make bench`) writes benchmarks/results/summary.md:
one table of every measure of every benchmark, with its peer and ratio.
"""
import datetime
import hashlib
import json
import os
import pathlib
import platform
import resource
import statistics
import subprocess
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
RESULTS = HERE / "results"
ROOT = HERE.parent


def add_arguments(parser, runs=3, warmup=1):
    """The flags every benchmark takes (its own sizes come on top, each with a --quick value)."""
    parser.add_argument("--quick", action="store_true", help="small sizes, fewer runs (make bench QUICK=1)")
    parser.add_argument("--runs", type=int, default=None, help=f"measured runs per contender (default {runs}, "
                                                                f"quick: 1)")
    parser.add_argument("--warmup", type=int, default=None, help=f"unmeasured runs first (default {warmup})")
    parser.add_argument("--results", type=pathlib.Path, default=RESULTS, help="directory for the JSON result")
    parser.set_defaults(_runs_default=runs, _warmup_default=warmup)


def settle(args, **quick_values):
    """Fill runs/warmup and every size left unset: quick values under --quick, else the defaults."""
    if args.runs is None:
        args.runs = 1 if args.quick else args._runs_default
    if args.warmup is None:
        args.warmup = min(1, args._warmup_default) if args.quick else args._warmup_default
    for name, (full, quick) in quick_values.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    return args


def params_of(args):
    return {k: (str(v) if isinstance(v, pathlib.Path) else v) for k, v in vars(args).items()
            if not k.startswith("_") and k != "results"}


# -- measuring -------------------------------------------------------------------------------------
def cpu_seconds():
    """User + system CPU of this process and its waited-for children."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def file_sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


class Sample(dict):
    """One run of one contender: at least "wall" and "cpu" (seconds); anything else it measured."""


def timed(fn):
    """Run fn() and return a Sample of its wall and CPU seconds (fn may return a dict of extras)."""
    cpu, started = cpu_seconds(), time.perf_counter()
    extra = fn()
    sample = Sample(wall=time.perf_counter() - started, cpu=cpu_seconds() - cpu)
    if isinstance(extra, dict):
        sample.update(extra)
    return sample


def interleave(contenders, runs, warmup=1, say=print):
    """{name: fn} -> {name: [Sample]}: warm-up rounds, then `runs` rounds of every contender in turn.

    fn() returns a Sample (when it measures itself, e.g. a server's CPU) or anything else (then
    it is timed here). The order rotates every round so no contender always runs first."""
    names = list(contenders)
    out = {name: [] for name in names}
    for round_no in range(warmup + runs):
        order = names[round_no % len(names):] + names[:round_no % len(names)]
        for name in order:
            fn = contenders[name]
            cpu, started = cpu_seconds(), time.perf_counter()
            result = fn()
            if isinstance(result, Sample):
                sample = result
            else:
                sample = Sample(wall=time.perf_counter() - started, cpu=cpu_seconds() - cpu)
                if isinstance(result, dict):
                    sample.update(result)
            if round_no >= warmup:
                out[name].append(sample)
            tag = "warm-up" if round_no < warmup else f"run {round_no - warmup + 1}"
            say(f"  {tag:8s} {name:24s} {sample['wall']:8.3f} s wall {sample['cpu']:8.3f} s cpu", flush=True)
    return out


def stats(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": values}


# -- recording -------------------------------------------------------------------------------------
def machine_facts(tools=()):
    """CPU count, kernel, Python, load, and the version of wwfast and of each peer tool asked for."""
    facts = {"cpus": os.cpu_count(), "kernel": platform.release(), "python": platform.python_version(),
             "machine": platform.machine(), "load_average": [round(x, 2) for x in os.getloadavg()],
             "cpu_model": _cpu_model()}
    out = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"], capture_output=True, text=True)
    facts["wwfast"] = out.stdout.strip() or "unknown"
    versions = {}
    for tool in tools:
        versions[tool] = tool_version(tool)
    for module in ("zstandard", "uvloop", "httptools", "numpy"):
        try:
            versions[module] = __import__(module).__version__
        except Exception:
            pass
    facts["versions"] = versions
    return facts


def _cpu_model():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def tool_version(tool):
    """The Debian package version of the package holding `tool` (or its --version line)."""
    path = subprocess.run(["sh", "-c", f"command -v {tool}"], capture_output=True, text=True).stdout.strip()
    if path:
        owner = subprocess.run(["dpkg", "-S", os.path.realpath(path)], capture_output=True, text=True)
        if owner.returncode == 0:
            pkg = owner.stdout.split(":")[0]
            version = subprocess.run(["dpkg-query", "-W", "-f=${Version}", pkg], capture_output=True, text=True)
            if version.returncode == 0:
                return f"{pkg} {version.stdout}"
    return "not installed" if not path else "unknown"


class Result:
    def __init__(self, bench, description, params=None, quick=False, tools=()):
        self.doc = {"bench": bench, "description": description, "quick": bool(quick), "params": params or {},
                    "when": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                    "machine": machine_facts(tools), "measures": [], "details": {}}

    def add(self, measure, ours, peer=None, *, unit="s", better="lower", ours_name="wwfast", peer_name=None,
            goal=None, limit=None, key="wall", note="", cpu=None):
        """`ours`/`peer`: lists of Samples (their `key` is the value; their "cpu" goes beside it) or of
        numbers. `goal`: the ratio to reach; `limit`: a bound our median must stay within (at most, or
        at least for `better="higher"`). `cpu`: show the samples' CPU seconds beside (default: for
        wall-time measures)."""
        cpu = key == "wall" if cpu is None else cpu
        entry = {"name": measure, "unit": unit, "better": better, "note": note,
                 "ours": self._side(ours_name, ours, key, cpu)}
        if peer is not None:
            entry["peer"] = self._side(peer_name or "peer", peer, key, cpu)
            o, p = entry["ours"]["median"], entry["peer"]["median"]
            entry["ratio"] = (p / o if better == "lower" else o / p) if o and p else None
        if goal is not None:
            ratio = entry.get("ratio")
            entry["goal"] = {"ratio": goal, "met": ratio is not None and ratio >= goal}
        if limit is not None:
            worst = entry["ours"]["min"] if better == "higher" else entry["ours"]["max"]
            met = worst is not None and (worst >= limit if better == "higher" else worst <= limit)
            entry["goal"] = {**entry.get("goal", {}), "limit": limit,
                             "met": bool(met) and entry.get("goal", {}).get("met", True)}
        self.doc["measures"].append(entry)
        return entry

    @staticmethod
    def _side(name, samples, key, with_cpu):
        values = [s[key] if isinstance(s, dict) else s for s in samples]
        side = {"name": name, **(stats(values) or {"median": None, "min": None, "max": None, "runs": values})}
        cpu = [s.get("cpu") for s in samples if isinstance(s, dict)]
        if with_cpu and any(c is not None for c in cpu):
            side["cpu"] = stats(cpu)
        return side

    def detail(self, key, value):
        self.doc["details"][key] = value

    def write(self, directory=RESULTS):
        directory = pathlib.Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{self.doc['bench']}.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.doc, indent=1, sort_keys=True) + "\n")
        os.replace(tmp, path)
        self.print_table()
        print(f"result: {path}")
        return path

    def print_table(self):
        print(f"\n{self.doc['bench']}: {self.doc['description']}")
        for line in table_lines(self.doc):
            print(line)


# -- the summary -----------------------------------------------------------------------------------
def _fmt(value, unit):
    if value is None:
        return "-"
    if unit in ("s", "MB", "MB/s", "GB/s", "x") or isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def _side_text(side, unit):
    text = f"{_fmt(side['median'], unit)} [{_fmt(side['min'], unit)}–{_fmt(side['max'], unit)}]"
    if "cpu" in side:
        text += f" (cpu {_fmt(side['cpu']['median'], 's')} s)"
    return text


def table_lines(doc):
    lines = ["| measure | unit | wwfast: median [min–max] | peer | peer: median [min–max] | ratio | goal |",
             "|---|---|---|---|---|---|---|"]
    for m in doc["measures"]:
        peer = m.get("peer")
        goal = m.get("goal")
        goal_text = "-"
        if goal:
            parts = ([f"ratio ≥{goal['ratio']:g}x"] if "ratio" in goal else []) + \
                ([f"every run {'≥' if m['better'] == 'higher' else '≤'}{goal['limit']:g}"] if "limit" in goal else [])
            goal_text = f"{', '.join(parts)}: {'met' if goal['met'] else '**missed**'}"
        lines.append(f"| {m['name']} | {m['unit']} | {m['ours']['name']}: {_side_text(m['ours'], m['unit'])} | "
                     f"{peer['name'] if peer else '-'} | {_side_text(peer, m['unit']) if peer else '-'} | "
                     f"{_fmt(m.get('ratio'), 'x')}{'x' if m.get('ratio') else ''} | {goal_text} |")
    return lines


def write_summary(directory=RESULTS):
    directory = pathlib.Path(directory)
    docs = [json.loads(p.read_text()) for p in sorted(directory.glob("*.json"))]
    out = ["# Benchmark summary", "",
           "Written by `make bench` (`python benchmarks/harness.py summary`) from benchmarks/results/*.json.",
           "Ratio: how many times better wwfast is than the peer measured in the same run (peer/ours for",
           "times, ours/peer for rates); medians of the runs, [min–max], CPU seconds beside.", ""]
    for doc in docs:
        m = doc["machine"]
        params = ", ".join(f"{k}={v}" for k, v in sorted(doc["params"].items()) if v not in (None, False, ""))
        out += [f"## {doc['bench']}{' (quick)' if doc.get('quick') else ''}", "", doc["description"], "",
                f"{doc['when']}; {m['cpus']} CPUs ({m['cpu_model']}), kernel {m['kernel']}, load "
                f"{m['load_average'][0]} at the end, wwfast {m['wwfast']}; "
                + ", ".join(f"{k} {v}" for k, v in sorted(m.get("versions", {}).items())),
                "", f"Parameters: {params}", "", *table_lines(doc), ""]
    path = directory / "summary.md"
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text("\n".join(out))
    os.replace(tmp, path)
    return path


if __name__ == "__main__":
    if sys.argv[1:] != ["summary"]:
        sys.exit("usage: python benchmarks/harness.py summary")
    print(f"wrote {write_summary()}")
