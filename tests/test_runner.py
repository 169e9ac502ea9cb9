"""The stage runner: current or rerun with the reason, the stamp written last, one lock per stage; and the
build stage reruns when the code that renders its output changes."""
import json
import os
import shutil
import subprocess
import sys

import pytest

from wwfast import fsutil, layout, runner

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Toy:
    """A stage that copies conf/in.txt to STATE/out.txt, its code a module file of its own."""

    def __init__(self, tmp_path):
        self.conf, self.state = tmp_path / "conf", tmp_path / "state"
        self.conf.mkdir()
        (self.conf / "in.txt").write_text("hello\n")
        self.code = tmp_path / "toy_code.py"
        self.code.write_text("SUFFIX = '!'\n")
        self.fail = False
        self.runs = 0
        self.log = []
        self.stage = runner.Stage(
            name="toy", run=self.run, code=(str(self.code),),
            inputs=lambda ctx: [self.conf / "in.txt"],
            settings=lambda ctx: {"level": ctx.settings},
            outputs=lambda ctx: [self.state / "out.txt"])

    def run(self, ctx):
        self.runs += 1
        if self.fail:
            return 1
        fsutil.atomic_write(self.state / "out.txt", (self.conf / "in.txt").read_text())
        ctx.memory["runs"] = ctx.memory.get("runs", 0) + 1
        return 0

    def go(self, settings=3, **kw):
        self.log.clear()
        return runner.run(self.stage, self.conf, self.state, settings, log=self.log.append, **kw)


def test_reruns_only_for_a_reason_and_says_it(tmp_path):
    toy = Toy(tmp_path)
    assert toy.go().reasons == ["no record of a previous run"] and toy.runs == 1
    assert toy.log[0] == "toy: running (no record of a previous run)"
    stamp = runner.read_stamp(toy.state, "toy")
    assert stamp["ok"] and stamp["memory"] == {"runs": 1} and stamp["settings"] == {"level": 3}
    assert not toy.go().ran and toy.log == ["toy: current (inputs unchanged)"] and toy.runs == 1

    os.utime(toy.conf / "in.txt", ns=(1, 1))         # mtime moved, same bytes: hashed, still current
    assert not toy.go().ran
    assert runner.read_stamp(toy.state, "toy")["files"][str(toy.conf / "in.txt")][1] == 1   # stat refreshed
    (toy.conf / "in.txt").write_text("changed\n")
    assert toy.go().reasons == ["1 input(s) changed: in.txt"]
    assert toy.go(settings=4).reasons == ["settings changed: level 3 -> 4"]
    toy.code.write_text("SUFFIX = '?'\n")             # the code the stage depends on
    assert toy.go(settings=4).reasons[0].startswith("1 code file(s) changed:")
    (toy.state / "out.txt").unlink()
    assert toy.go(settings=4).reasons == ["output out.txt missing"]
    (toy.state / "out.txt").write_text("edited by hand\n")
    assert toy.go(settings=4).reasons == ["1 output(s) changed since the last run: out.txt"]
    assert toy.go(settings=4, force=True).reasons == ["forced"]
    assert runner.read_stamp(toy.state, "toy")["memory"] == {"runs": 7} == {"runs": toy.runs}


def test_failed_run_is_recorded_and_rerun(tmp_path):
    toy = Toy(tmp_path)
    toy.go()
    (toy.conf / "in.txt").write_text("changed\n")
    toy.fail = True
    assert toy.go().code == 1 and runner.read_stamp(toy.state, "toy")["ok"] is False
    toy.fail = False
    assert toy.go().reasons == ["the previous run did not finish"]
    assert (toy.state / "out.txt").read_text() == "changed\n"


def test_one_lock_per_stage(tmp_path):
    toy = Toy(tmp_path)
    with runner.stage_locks(toy.state, ["toy"]):
        with pytest.raises(fsutil.LockBusy, match=f"another toy run \\(pid {os.getpid()}\\) holds"):
            toy.go(wait=False)
    assert toy.runs == 0
    toy.go()
    assert sorted(os.listdir(layout.stages_dir(toy.state))) == ["toy.lock", "toy.stamp"]


def _stage(copy, name, state, conf):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(copy)
    return subprocess.run([sys.executable, "-m", f"stages.{name}", "--conf", str(conf), "--state", str(state)],
                          cwd=copy, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_build_reruns_when_its_rendering_code_changes(tmp_path):
    """A copy of the checkout: an edit to wwfast/builder/render.py reruns build; an edit to the compress
    code leaves build current."""
    copy = tmp_path / "src"
    top = {".venv", ".git", "var", "build", "tests", "benchmarks"}
    shutil.copytree(ROOT, copy, ignore=lambda d, names: [n for n in names if n == "__pycache__" or n.endswith(".c")
                                                          or (os.path.samefile(d, ROOT) and n in top)])
    conf, state = copy / "conf", tmp_path / "state"
    tree = tmp_path / "tree"
    from wwfast.builder import images
    os.makedirs(tree / "boot")
    (tree / "boot" / "vmlinuz-6.1.0-1-amd64").write_bytes(b"kernel")
    (tree / "sbin").mkdir()
    (tree / "sbin" / "init").write_bytes(b"#!/bin/sh\n")
    images.import_image(tree, "demo", state, log=lambda *_: None)
    for name in ("define", "build"):
        out = _stage(copy, name, state, conf)
        assert out.returncode == 0, out.stderr
    stamp = runner.read_stamp(state, "build")
    assert str(copy / "wwfast" / "builder" / "render.py") in stamp["code"]      # the copy's code, not ours
    assert "build: current (inputs unchanged)" in _stage(copy, "build", state, conf).stdout
    with open(copy / "wwfast" / "publish" / "compress.py", "a") as f:
        f.write("# not build's code\n")
    assert "build: current (inputs unchanged)" in _stage(copy, "build", state, conf).stdout
    with open(copy / "wwfast" / "builder" / "render.py", "a") as f:
        f.write("# a change to the renderer\n")
    out = _stage(copy, "build", state, conf)
    assert "build: running (1 code file(s) changed: wwfast/builder/render.py)" in out.stdout, out.stdout + out.stderr
    assert json.loads((state / "build" / "build.json").read_text())["nodes"]


@pytest.mark.parametrize("text", ["{torn", "[]", '{"format": 1, "files": [1, 2]}', '{"format": 1, "ok": true, "code": {"x": 5}}'])
def test_a_damaged_stamp_means_rerun_not_crash(tmp_path, text):
    toy = Toy(tmp_path)
    toy.go()
    (toy.state / "stages" / "toy.stamp").write_text(text)
    outcome = toy.go()
    assert outcome.ran and outcome.code == 0
    assert runner.read_stamp(toy.state, "toy")["ok"]
