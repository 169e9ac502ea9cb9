"""`wwfast power on|off|cycle|reset|soft|status PATTERN`, `wwfast node sensors|console`: nodes' BMCs.

Many nodes at once: `--fanout` commands in flight (default 50), each ended after `--timeout` seconds;
one line per node as it finishes, then a summary; exit status 1 when any node failed. `--json` prints
the results as one JSON document instead.
"""
import argparse
import sys
import time

from wwfast.commands.listing import print_json
from wwfast.define import hostlist, nodefile, nodes
from wwfast.define.select import select
from wwfast.errors import UsageError
from wwfast.ops import bmc as bmcs
from wwfast.ops.fanout import DEFAULT_FANOUT, run_all

DEFAULT_TIMEOUT = 30.0
RAW = argparse.RawDescriptionHelpFormatter

POWER_EXAMPLE = """\
examples:
  wwfast power status n[001-064]          # one line per node, then a summary
  wwfast power on 'rack2-*' --fanout 20   # at most 20 BMCs at once
  wwfast power cycle n005 --show          # print the ipmitool command (password masked), run nothing
"""


def _common(p):
    p.add_argument("patterns", nargs="+", metavar="PATTERN", help="nodes: names, hostlists (n[1-4]) or globs")
    p.add_argument("--fanout", type=int, default=DEFAULT_FANOUT, metavar="N",
                   help=f"BMCs contacted at once (default {DEFAULT_FANOUT})")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, metavar="SECONDS",
                   help=f"give up on a node after this long (default {DEFAULT_TIMEOUT:g})")
    p.add_argument("--json", action="store_true", help="results as JSON")
    p.add_argument("-s", "--show", action="store_true", help="print the commands instead of running them")


def register(subparsers):
    p = subparsers.add_parser("power", help="power nodes on/off and ask their state, through their BMCs",
                              epilog=POWER_EXAMPLE, formatter_class=RAW)
    sub = p.add_subparsers(dest="power_command", metavar="ACTION", required=True)
    for action, what in (("on", "power on"), ("off", "power off (hard)"), ("cycle", "power off, then on"),
                         ("reset", "hard reset"), ("soft", "ask the OS to shut down (ACPI)"),
                         ("status", "print the power state")):
        a = sub.add_parser(action, help=what, epilog=POWER_EXAMPLE, formatter_class=RAW)
        _common(a)
        a.set_defaults(func=cmd_power, action=action)


def register_node_actions(node_sub):
    """`node sensors` and `node console` (called by wwfast.commands.node)."""
    p = node_sub.add_parser("sensors", help="read the sensors of nodes' BMCs", formatter_class=RAW,
                            epilog="example:\n  wwfast node sensors n[01-04] --full\n")
    _common(p)
    p.add_argument("-F", "--full", action="store_true", help="every threshold (ipmitool sensor list)")
    p.set_defaults(func=cmd_sensors)
    p = node_sub.add_parser("console", help="Serial-over-LAN console of one node (IPMI 2.0)", formatter_class=RAW,
                            epilog="example:\n  wwfast node console n001   # leave with the escape char, then '.'\n")
    p.add_argument("node", metavar="NODE")
    p.add_argument("-s", "--show", action="store_true", help="print the command instead of running it")
    p.set_defaults(func=cmd_console)


def _targets(args, patterns):
    resolved = nodes.resolve(nodefile.read_config(args.conf))
    names = select(patterns, sorted(resolved))
    return [(name, resolved[name]) for name in names]


def _bmc_or_result(name, node):
    try:
        return bmcs.Bmc.of_node(name, node), None
    except bmcs.BmcError as e:
        return None, bmcs.Result(name, False, error=str(e))


def _fan_out(args, command, verbose, describe):
    """Run `command` on every selected node; print per node, then the summary; exit status."""
    if args.fanout < 1:
        raise UsageError("--fanout must be at least 1")
    if args.timeout <= 0:
        raise UsageError("--timeout must be positive")
    origin = time.monotonic()
    targets = _targets(args, args.patterns)
    jobs, results = [], []
    for name, node in targets:
        bmc, failed = _bmc_or_result(name, node)
        (results.append(failed) if failed else jobs.append(bmc))
    if args.show:
        for bmc in jobs:
            print(f"{bmc.node}: {bmc.shown(command)}")
        for r in results:
            print(f"{r.node}: FAILED: {r.error}")
        return 1 if results else 0

    def report(result):
        if not args.json:
            print(describe(result), flush=True)

    for r in results:
        report(r)
    results += run_all(jobs, lambda b: bmcs.run(b, command, args.timeout, verbose=verbose),
                       fanout=args.fanout, on_result=report)
    failed = sorted((r.node for r in results if not r.ok), key=hostlist._natural_key)
    if args.json:
        order = {name: i for i, (name, _) in enumerate(targets)}
        print_json({"command": " ".join(command), "ok": len(results) - len(failed), "failed": len(failed),
                    "results": [r.as_dict(origin) for r in sorted(results, key=lambda r: order[r.node])]})
    else:
        summary = f"{' '.join(command)}: {len(results)} node{'s' if len(results) != 1 else ''}, " \
                  f"{len(results) - len(failed)} ok, {len(failed)} failed"
        if failed:
            summary += f": {hostlist.compress(failed)}"
        print(summary, file=sys.stderr if failed else sys.stdout)
    return 1 if failed else 0


def _one_line(result):
    if not result.ok:
        return f"{result.node}: FAILED: {result.error}"
    lines = result.output.splitlines()
    return f"{result.node}: {lines[-1] if lines else 'ok'}"


def cmd_power(args):
    # -v: ipmitool then says why a login failed (its chassis output stays the same)
    return _fan_out(args, bmcs.POWER_ACTIONS[args.action], verbose=True, describe=_one_line)


def _sensor_lines(result):
    if not result.ok:
        return f"{result.node}: FAILED: {result.error}"
    lines = [line.rstrip() for line in result.output.splitlines() if line.strip()]
    return "\n".join(f"{result.node}: {line}" for line in lines) or f"{result.node}: (no sensors)"


def cmd_sensors(args):
    command = bmcs.SENSOR_LIST if args.full else bmcs.SDR_LIST
    return _fan_out(args, command, verbose=False, describe=_sensor_lines)


def cmd_console(args):
    targets = _targets(args, [args.node])
    if len(targets) != 1:
        raise UsageError(f"console: name one node, not {len(targets)} ({hostlist.compress(n for n, _ in targets)})")
    name, node = targets[0]
    bmc, failed = _bmc_or_result(name, node)
    if failed:
        raise UsageError(f"{name}: {failed.error}")
    if args.show:
        print(bmc.shown(bmcs.CONSOLE, interface="lanplus"))
        return 0
    if bmc.interface != "lanplus":
        print(f"{name}: Serial-over-LAN needs IPMI 2.0: using lanplus", file=sys.stderr)
    print(f"{name}: console of BMC {bmc.where}; leave with {bmc.escape}.", file=sys.stderr, flush=True)
    bmcs.exec_console(bmc)
