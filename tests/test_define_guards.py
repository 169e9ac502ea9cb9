"""The define stage against the faults a new user met (issue 11): a mistyped --conf, a node file that lost
most of its nodes, a settings file only later stages rejected, and kill -9 in the middle of a run. Each
test runs the stage as cron does (`python -m stages.define` or `make define`) and checks that the database
of the previous run is byte for byte what it was."""
import json
import pathlib
import signal
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


def node_file(count, first=1):
    return "nodes:\n" + "".join(
        f"  n{i}:\n    network devices:\n      default: {{hwaddr: \"52:54:00:00:01:{i:02x}\", ipaddr: 10.0.2.{i}}}\n"
        for i in range(first, first + count))


@pytest.fixture
def site(tmp_path):
    """A conf with four nodes, defined once; returns (conf, state, bytes of that nodes.json)."""
    conf, state = tmp_path / "conf", tmp_path / "var"
    conf.mkdir()
    (conf / "nodes.yaml").write_text(node_file(4))
    out = stage(conf, state)
    assert out.returncode == 0, out.stderr
    return conf, state, snapshot(state)


def stage(conf, state, *extra):
    return subprocess.run([sys.executable, "-m", "stages.define", "--conf", str(conf), "--state", str(state), *extra],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)


def snapshot(state):
    """Every file of the define directory but its lock: what a failed run must leave as it was."""
    d = state / "define"
    return {p.name: p.read_bytes() for p in sorted(d.iterdir()) if p.name != ".lock"}


def node_ids(state):
    return sorted(json.loads((state / "define" / "nodes.json").read_bytes())["nodes"])


def test_a_mistyped_conf_dir_is_an_error_naming_it_and_the_database_stays(site, tmp_path):
    conf, state, before = site
    out = stage(tmp_path / "nonexistent", state)
    assert out.returncode != 0
    assert f"{tmp_path / 'nonexistent'}: the configuration directory does not exist" in out.stderr, out.stderr
    assert snapshot(state) == before
    # a conf directory without a node file: the path of the file it looked for
    (tmp_path / "empty").mkdir()
    out = stage(tmp_path / "empty", state)
    assert out.returncode != 0 and f"{tmp_path / 'empty' / 'nodes.yaml'}: no node file" in out.stderr, out.stderr
    assert snapshot(state) == before


@pytest.mark.parametrize("kept,refused", [(2, False), (1, True), (0, True)])
def test_dropping_every_node_or_more_than_half_needs_allow_shrink(site, kept, refused):
    conf, state, before = site
    (conf / "nodes.yaml").write_text(node_file(kept) if kept else "nodes: {}\n")
    out = stage(conf, state)
    if not refused:                               # half of them may go: an admin retiring a rack
        assert out.returncode == 0 and node_ids(state) == [f"n{i}" for i in range(1, kept + 1)], out.stderr
        return
    gone = 4 - kept
    assert out.returncode == 1, out.stdout + out.stderr
    assert f"would drop {gone} of the 4 nodes in {state / 'define' / 'nodes.json'} ({kept} left)" in out.stderr
    assert "--allow-shrink" in out.stderr and "define: nothing written" in out.stderr
    assert snapshot(state) == before
    # refused again on the next run (cron), not skipped as current
    assert stage(conf, state).returncode == 1 and snapshot(state) == before
    out = stage(conf, state, "--allow-shrink")
    assert out.returncode == 0, out.stderr
    assert node_ids(state) == [f"n{i}" for i in range(1, kept + 1)]


def test_make_define_passes_allow_shrink(site):
    conf, state, before = site
    (conf / "nodes.yaml").write_text(node_file(1, first=9))
    make = ["make", "--no-print-directory", "define", f"PY={sys.executable}", f"CONF={conf}", f"STATE={state}"]
    out = subprocess.run(make, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "would drop 4 of the 4 nodes" in out.stderr, out.stdout + out.stderr
    assert snapshot(state) == before
    out = subprocess.run(make + ["ALLOW_SHRINK=1"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert node_ids(state) == ["n9"]


def test_a_new_cluster_and_a_growing_one_need_no_flag(tmp_path):
    conf, state = tmp_path / "conf", tmp_path / "var"
    conf.mkdir()
    (conf / "nodes.yaml").write_text(node_file(1))
    assert stage(conf, state).returncode == 0
    (conf / "nodes.yaml").write_text(node_file(2, first=5))      # n1 goes, n5 n6 come: 1 of 1 would go
    assert stage(conf, state).returncode == 1
    (conf / "nodes.yaml").write_text(node_file(3))               # grows: n2 n3 come
    assert stage(conf, state).returncode == 0 and node_ids(state) == ["n1", "n2", "n3"]


BAD_PORT = "ipaddr: 10.0.2.2\nwarewulf:\n  port: abc\n"


def test_define_reports_the_settings_errors_build_and_serve_report(site):
    conf, state, before = site
    (conf / "wwfast.yaml").write_text(BAD_PORT)
    expected = f'{conf / "wwfast.yaml"}:3: warewulf.port: "abc" is not a whole number'
    out = stage(conf, state, "--force")
    assert out.returncode == 1 and f"define: error: {expected}" in out.stderr, out.stderr
    assert snapshot(state) == before
    # the same message, from the same check, as the later stages give
    for name in ("build", "serve"):
        later = subprocess.run([sys.executable, "-m", f"stages.{name}", "--conf", str(conf), "--state", str(state)],
                               cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert later.returncode != 0 and expected in later.stderr, (name, later.stderr)


# The real stage in a child whose os.replace stops, before renaming, the temp file of the named target:
# the kill lands at a known point of the write, not at a sampled moment.
STOP_AT_RENAME = """
import os, sys
target = sys.argv[1]
real_replace = os.replace
def replace(src, dst, *a, **k):
    if os.path.basename(dst) == target:
        print("renaming " + os.fspath(src), flush=True)
        sys.stdin.read()            # until the parent kills us
    return real_replace(src, dst, *a, **k)
os.replace = replace
from stages import define
sys.exit(define.main(sys.argv[2:]))
"""


@pytest.mark.parametrize("target", ["nodes.json", "define.stamp"])
def test_kill_9_inside_a_define_run_leaves_the_previous_database(site, target):
    """Killed with nodes.json's new content written but not renamed in: the old database is whole. Killed
    after nodes.json but before the run's record (the runner's stamp): the new database is whole, and the next
    run redoes the work instead of calling it current."""
    conf, state, before = site
    stamp = state / "stages" / "define.stamp"
    stamp_before = stamp.read_bytes()
    (conf / "nodes.yaml").write_text(node_file(5))
    child = subprocess.Popen([sys.executable, "-c", STOP_AT_RENAME, target, "--conf", str(conf), "--state", str(state)],
                             cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        line = ""
        while not line.startswith("renaming "):
            line = child.stdout.readline()
            assert line, f"the child ended without reaching the rename of {target} (exit {child.wait()})"
        tmp = pathlib.Path(line.split(" ", 1)[1].strip())
        assert tmp.parent == stamp.parent if target == "define.stamp" else state / "define"
        assert tmp.is_file()     # the new content exists, beside it
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdin.close()
        child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    after = {name: data for name, data in snapshot(state).items() if not name.endswith(".tmp")}
    if target == "nodes.json":
        assert after == before
    else:
        assert node_ids(state) == ["n1", "n2", "n3", "n4", "n5"] and stamp.read_bytes() == stamp_before
    out = stage(conf, state)                       # the next run cleans up after itself and finishes the job
    assert out.returncode == 0 and "define: running" in out.stdout, out.stdout
    assert node_ids(state) == ["n1", "n2", "n3", "n4", "n5"]
    assert not list((state / "define").glob(".*.tmp")) and not list(stamp.parent.glob(".*.tmp"))


def test_previous_node_ids_scan_agrees_with_parsing_the_database(tmp_path):
    from wwfast.define import nodefile, nodes, shrink
    ids = ["n-1.rack", "N_2", "n:3", "x" * 60]
    text = "nodes:\n" + "".join(f'  "{i}": {{network devices: {{d: {{ipaddr: 10.0.0.{k}}}}}}}\n' for k, i in enumerate(ids))
    path = nodes.write_db(str(tmp_path), nodes.resolve(nodefile.parse_config(text, "nodes.yaml")))
    assert shrink.previous_ids(path) == set(json.loads(pathlib.Path(path).read_bytes())["nodes"]) == set(ids)
    pathlib.Path(path).write_text(json.dumps({"format": 1, "nodes": {i: {} for i in ids}}))   # not canonical
    assert shrink.previous_ids(path) == set(ids)
    pathlib.Path(path).write_text("{torn")
    assert shrink.previous_ids(path) == set()
