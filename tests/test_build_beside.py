"""The build stage packs images in a thread beside the per-node steps (overlays, iPXE) when those stay in
this process, and in turn when they fork workers; results, errors and build.json are as before.

Asserted on records of which thread ran what and what each step saw, never on timing."""
import threading
import time
import types

import pytest

from stages import build
from wwfast.builder import fanout
from wwfast.builder.image_archives import StepResult


def _ctx(tmp_path):
    logs = []
    return types.SimpleNamespace(state_dir=str(tmp_path), conf_dir=str(tmp_path), log=logs.append, logs=logs,
                                 memory={}, force=False)


def _steps(monkeypatch, nodes, images_step):
    record = {}
    overlays_ran = threading.Event()

    def step(name, fields):
        def run(ctx):
            record[name] = threading.current_thread().name
            if name == "overlays":
                overlays_ran.set()
            result = StepResult()
            for node_id in ctx.nodes:
                result.nodes[node_id] = dict(fields)
            return result
        return run
    steps = [("node", step("node", {"macs": [], "addresses": [], "asset_key": ""})),
             ("images", lambda ctx: images_step(ctx, record, overlays_ran)),
             ("overlays", step("overlays", {"system": "s", "runtime": "r"})),
             ("ipxe", step("ipxe", {"ipxe": "i"}))]
    monkeypatch.setattr(build, "STEPS", steps)
    monkeypatch.setattr(build.records, "read_nodes", lambda path: dict(nodes))
    return record


def _images(ctx, record, overlays_ran):
    record["images"] = threading.current_thread().name
    # beside the others: the overlays step runs while this one is still in progress
    record["overlays ran while packing"] = overlays_ran.wait(timeout=30)
    result = StepResult()
    for node_id in ctx.nodes:
        result.nodes[node_id] = {"image": "img", "image_cpio": "images/img.cpio", "kernel": "images/img.kernel"}
    result.top["packed"] = {"images/img.cpio": {"size": 1}}
    return result


def test_images_are_packed_beside_the_per_node_steps(tmp_path, monkeypatch):
    record = _steps(monkeypatch, {"n1": object(), "n2": object()}, _images)
    ctx = _ctx(tmp_path)
    assert build._run(ctx) == 0
    main = threading.current_thread().name
    assert record == {"node": main, "images": "build-images", "overlays ran while packing": True,
                      "overlays": main, "ipxe": main}
    doc = build.json.loads((tmp_path / "build" / "build.json").read_text())
    assert sorted(doc["nodes"]) == ["n1", "n2"] and doc["packed"] == {"images/img.cpio": {"size": 1}}
    assert doc["nodes"]["n1"]["system"] == "s" and doc["nodes"]["n1"]["image"] == "img"


def test_in_turn_when_the_per_node_steps_fork(tmp_path, monkeypatch):
    monkeypatch.setattr(fanout, "MIN_ITEMS", 2)      # two nodes: the per-node steps would fork workers

    def images(ctx, record, overlays_ran):
        record["overlays ran before"] = overlays_ran.is_set()
        return _images(ctx, {}, types.SimpleNamespace(wait=lambda timeout: None))
    record = _steps(monkeypatch, {"n1": object(), "n2": object()}, images)
    assert build._run(_ctx(tmp_path)) == 0
    main = threading.current_thread().name
    assert record == {"node": main, "overlays ran before": False, "overlays": main, "ipxe": main}


def test_a_failing_pack_is_raised_in_the_stage_after_the_other_steps(tmp_path, monkeypatch):
    def images(ctx, record, overlays_ran):
        overlays_ran.wait(timeout=30)
        raise OSError(28, "No space left on device")
    record = _steps(monkeypatch, {"n1": object()}, images)
    with pytest.raises(OSError, match="No space left"):
        build._run(_ctx(tmp_path))
    assert record["overlays"] == record["ipxe"] == threading.current_thread().name
    assert not (tmp_path / "build" / "build.json").exists()


def test_a_failing_step_waits_for_the_pack_to_end(tmp_path, monkeypatch):
    ended = []

    failing = threading.Event()

    def images(ctx, record, overlays_ran):
        failing.wait(timeout=30)
        time.sleep(0.2)         # still packing when the stage's thread raises (without the join: not ended)
        ended.append(True)
        return StepResult()
    _steps(monkeypatch, {"n1": object()}, images)
    steps = list(build.STEPS)

    def broken(ctx):
        failing.set()
        raise RuntimeError("template exploded")
    steps[3] = ("ipxe", broken)
    monkeypatch.setattr(build, "STEPS", steps)
    with pytest.raises(RuntimeError, match="template exploded"):
        build._run(_ctx(tmp_path))
    assert ended == [True]      # the pack was not left running when the stage gave up
