"""Per-node iPXE scripts and unknown.ipxe: goldens, site templates, incremental writes, clear errors.

Regenerate the goldens after an intended change: WWFAST_UPDATE_GOLDEN=1 pytest tests/test_ipxe.py
"""
import os
import pathlib

import pytest

from helpers.overlay_fixtures import edit_node, fixture_nodes, fixture_settings, make_node
from wwfast.builder.ipxe import build_ipxe, out_dir, run_step
from wwfast.builder.render import RenderError

GOLDEN = pathlib.Path(__file__).parent / "golden" / "ipxe"
UPDATE = os.environ.get("WWFAST_UPDATE_GOLDEN") == "1"


def _check_golden(name, text):
    golden = GOLDEN / name
    if UPDATE:
        golden.write_text(text)
    assert golden.read_text() == text, f"{name} differs from its golden (WWFAST_UPDATE_GOLDEN=1 to accept)"


@pytest.mark.parametrize("secure", [False, True])
def test_scripts_match_goldens(tmp_path, secure):
    conf, state = tmp_path / "conf", tmp_path / "state"
    changed, removed = build_ipxe(conf, state, fixture_settings(secure=secure), fixture_nodes())
    assert sorted(changed) == sorted(fixture_nodes()) and removed == []
    suffix = ".secure" if secure else ""
    for node in fixture_nodes():
        _check_golden(f"{node}{suffix}.ipxe", (pathlib.Path(out_dir(state)) / f"{node}.ipxe").read_text())
    _check_golden(f"unknown{suffix}.ipxe", (pathlib.Path(out_dir(state)) / "unknown.ipxe").read_text())


def test_script_content(tmp_path):
    state = tmp_path / "state"
    build_ipxe(tmp_path / "conf", state, fixture_settings(), fixture_nodes())
    text = (pathlib.Path(out_dir(state)) / "n-twonics.ipxe").read_text()
    mac = "52:54:00:00:00:02"
    assert text.startswith("#!ipxe\n")
    assert (f"kernel --name kernel ${{base}}/kernel/{mac}?${{query}} initrd=image initrd=system initrd=runtime "
            f"wwid={mac} console=ttyS0 net.ifnames=0 || goto failed") in text
    for stage in ("image", "system", "runtime"):
        assert f"initrd --name {stage} ${{base}}/{stage}/{mac}?${{query}} || goto failed" in text
    assert "set base http://10.0.2.2:9873" in text and "set query assetkey=${asset:uristring}&uuid=${uuid}" in text
    assert "compress=" not in text  # the server's default encoding
    secure = tmp_path / "secure"
    build_ipxe(tmp_path / "conf", secure, fixture_settings(secure=True), fixture_nodes())
    assert "initrd --name runtime" not in (pathlib.Path(out_dir(secure)) / "n-twonics.ipxe").read_text()


def test_only_changed_scripts_are_rewritten_and_stale_ones_removed(tmp_path):
    conf, state = tmp_path / "conf", tmp_path / "state"
    nodes = fixture_nodes()
    build_ipxe(conf, state, fixture_settings(), nodes)
    inode = os.stat(pathlib.Path(out_dir(state)) / "n-static.ipxe").st_ino
    assert build_ipxe(conf, state, fixture_settings(), nodes) == ([], [])
    nodes["n-vlan"] = edit_node(nodes["n-vlan"], lambda doc: doc["kernel"]["args"].append("debug"))
    del nodes["n-nonet"]
    assert build_ipxe(conf, state, fixture_settings(), nodes) == (["n-vlan"], ["n-nonet.ipxe"])
    assert os.stat(pathlib.Path(out_dir(state)) / "n-static.ipxe").st_ino == inode
    assert " debug || goto failed" in (pathlib.Path(out_dir(state)) / "n-vlan.ipxe").read_text()


def test_site_template_shadows_builtin_and_errors_say_where(tmp_path):
    conf, state = tmp_path / "conf", tmp_path / "state"
    (conf / "ipxe").mkdir(parents=True)
    (conf / "ipxe" / "custom.ipxe").write_text("#!ipxe\necho {{ id }} {{ hwaddr }}\nboot\n")
    nodes = {"c1": make_node("c1", **{"ipxe template": "custom"})}
    build_ipxe(conf, state, fixture_settings(), nodes)
    assert (pathlib.Path(out_dir(state)) / "c1.ipxe").read_text() == "#!ipxe\necho c1 \nboot\n"
    (conf / "ipxe" / "custom.ipxe").write_text("#!ipxe\n\necho {{ node_id }}\n")
    with pytest.raises(RenderError) as e:
        build_ipxe(conf, state, fixture_settings(), nodes)
    assert f"{conf}/ipxe/custom.ipxe:3: node c1: 'node_id' is undefined" in str(e.value)
    nodes["c1"] = make_node("c1", **{"ipxe template": "missing"})
    result = run_step(conf, state, nodes, fixture_settings(), log=lambda *_: None)
    assert result.errors and "iPXE template 'missing' not found" in result.errors[0]
