"""The command tree's stage verbs and `wwfast overlay build` go through the stage runner and its locks."""
import json
import os
import subprocess
import sys

from helpers.overlay_fixtures import fake_ssh_keys, fixture_nodes, make_images
from wwfast import layout, runner

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def wwfast(conf, state, *args, **kw):
    return subprocess.Popen([sys.executable, "-m", "wwfast.cli", "--conf", str(conf), "--state", str(state), *args],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"), **kw)


def test_overlay_build_waits_for_the_build_lock_and_keeps_its_records_in_the_stamp(tmp_path):
    conf, state = tmp_path / "conf", tmp_path / "state"
    (conf).mkdir()
    (conf / "wwfast.yaml").write_text("ipaddr: 10.0.2.2\nwarewulf:\n  secure: false\n")
    make_images(state)
    fake_ssh_keys(state)
    (state / "define").mkdir(parents=True)
    (state / "define" / "nodes.json").write_text(json.dumps(
        {"format": 1, "nodes": {n: v.to_json() for n, v in fixture_nodes().items()}}))
    with runner.stage_locks(state, ["build"]):          # a build run in progress
        proc = wwfast(conf, state, "overlay", "build")
        said = proc.stdout.readline()                   # it says so before it blocks on the lock
        assert f"another build run (pid {os.getpid()}) holds {layout.stage_lock(state, 'build')}" in said, \
            said + proc.stderr.read()
        assert proc.poll() is None and not (state / "build" / "overlays").exists()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "overlays: 4 node(s) rebuilt, 0 current" in out
    memory = runner.read_stamp(state, "build")["memory"]["overlays"]
    assert sorted(memory["nodes"]) == sorted(fixture_nodes())
    again = wwfast(conf, state, "overlay", "build").communicate(timeout=120)[0]
    assert "overlays: 0 node(s) rebuilt, 4 current" in again


def test_wwfast_all_no_wait_exits_75_while_another_run_holds_the_lock(tmp_path):
    from wwfast import fsutil
    conf, state = tmp_path / "conf", tmp_path / "state"
    conf.mkdir()
    with fsutil.locked(layout.all_lock(state)):
        busy = wwfast(conf, state, "all", "--no-wait")
        out, err = busy.communicate(timeout=60)
    assert busy.returncode == 75 and "wwfast all:" in err and "--no-wait" in err and out == ""
    proc = wwfast(conf, state, "all", "--no-wait")
    proc.communicate(timeout=60)
    assert proc.returncode == 1           # free now: it runs define, which finds no node file


def test_stage_verb_is_the_stage_file(tmp_path):
    """`wwfast define ARGS` is `python -m stages.define ARGS`: same flags, same output."""
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "nodes.yaml").write_text("nodes:\n  n1:\n    network devices:\n      d: {ipaddr: 10.0.0.1}\n")
    ours = wwfast(conf, tmp_path / "a", "define").communicate(timeout=60)
    theirs = subprocess.run([sys.executable, "-m", "stages.define", "--conf", str(conf), "--state", str(tmp_path / "b")],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    clean = [line.split(" in ")[0].replace(str(tmp_path / "a"), "S") for line in ours[0].splitlines()]
    assert clean == [line.split(" in ")[0].replace(str(tmp_path / "b"), "S") for line in theirs.stdout.splitlines()]
    assert clean[-1] == "define: wrote 1 nodes to S/define/nodes.json"
    helps = [wwfast(conf, tmp_path / "a", "build", "--help").communicate(timeout=60)[0],
             subprocess.run([sys.executable, "-m", "stages.build", "--help"], cwd=ROOT, capture_output=True,
                            text=True).stdout]
    assert helps[0] == helps[1] and "--force" in helps[0]


def test_overlay_build_in_secure_mode_points_build_json_at_the_new_shared_part(tmp_path):
    """`wwfast overlay build` after a static overlay file changed: the system archives' shared part is a
    new file (named by its content), so build.json's nodes must name it, or compress would pair the new
    own parts with a shared part that is gone."""
    conf, state = tmp_path / "conf", tmp_path / "state"
    conf.mkdir()
    (conf / "wwfast.yaml").write_text("ipaddr: 10.0.2.2\n")          # secure mode: the default
    make_images(state)
    fake_ssh_keys(state)
    (state / "define").mkdir(parents=True)
    (state / "define" / "nodes.json").write_text(json.dumps(
        {"format": 1, "nodes": {n: v.to_json() for n, v in fixture_nodes().items()}}))
    assert wwfast(conf, state, "overlay", "build").wait(timeout=120) == 0
    first = runner.read_stamp(state, "build")["memory"]["overlays"]["nodes"]
    old = {n: fp["system_shared"] for n, fp in first.items()}
    assert len(set(old.values())) >= 1 and all((state / "build" / rel).is_file() for rel in old.values())
    build_json = state / "build" / "build.json"   # as a build stage run left it (other fields elided)
    build_json.write_text(json.dumps({"format": 1, "nodes": {n: {"system_shared": rel} for n, rel in old.items()}}))
    site = conf / "overlays" / "issue" / "etc"        # a site copy of a static overlay: a new shared part
    site.mkdir(parents=True)
    (site / "issue").write_text("site issue\n")
    out, err = wwfast(conf, state, "overlay", "build").communicate(timeout=120)
    assert "overlays: 4 node(s) rebuilt" in out, out + err
    named = {n: e["system_shared"] for n, e in json.loads(build_json.read_text())["nodes"].items()}
    assert named != old and all((state / "build" / rel).is_file() for rel in named.values())
    assert not any((state / "build" / rel).exists() for rel in set(old.values()) - set(named.values()))
    assert named == {n: fp["system_shared"] for n, fp in
                     runner.read_stamp(state, "build")["memory"]["overlays"]["nodes"].items()}
