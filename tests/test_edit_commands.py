"""node/profile edit, export, import, set's review, and overlay create|delete|edit|import|mkdir|chmod|chown|info,
through the installed command with scripted editors (shell scripts given as $EDITOR)."""
import os
import pathlib
import shutil
import stat
import subprocess
import sys

import pytest

from wwfast.define import nodefile, nodes

WWFAST = str(pathlib.Path(sys.executable).with_name("wwfast"))
COMMENTS = ("# wwfast node database", "# Hardware of the demo machines", "# What every node boots.")


@pytest.fixture
def conf(tmp_path, project_root):
    shutil.copytree(project_root / "conf", tmp_path / "conf")
    return tmp_path / "conf"


def editor(tmp_path, name, script):
    """A scripted editor: `script` runs with $1 = the file; each run appends to NAME.runs."""
    path = tmp_path / name
    path.write_text(f"#!/bin/sh\necho run >> {tmp_path / (name + '.runs')}\n{script}\n")
    path.chmod(0o755)
    return str(path)


def runs(tmp_path, name):
    f = tmp_path / (name + ".runs")
    return len(f.read_text().split()) if f.exists() else 0


def ww(conf, *args, ok=True, editor=None, stdin=""):
    env = dict(os.environ)
    env.pop("VISUAL", None)
    if editor:
        env["EDITOR"] = editor
    out = subprocess.run([WWFAST, "--conf", str(conf), "--state", str(conf.parent / "var"), *args],
                         capture_output=True, text=True, timeout=60, env=env, input=stdin)
    assert (out.returncode == 0) == ok, (args, out.stdout, out.stderr)
    return out


def resolved(conf):
    return nodes.resolve(nodefile.read_config(str(conf)))


def test_node_edit_saves_a_valid_edit_and_keeps_comments(conf, tmp_path):
    ed = editor(tmp_path, "ed", "sed -i 's/ipaddr: 10.0.2.22/ipaddr: 10.0.2.99/' \"$1\"")
    out = ww(conf, "node", "edit", "n2", editor=ed)
    assert "node n2: network devices.default.ipaddr: 10.0.2.22 -> 10.0.2.99" in out.stdout
    assert resolved(conf)["n2"]["network devices"]["default"]["ipaddr"] == "10.0.2.99"
    text = (conf / "nodes.yaml").read_text()
    assert all(c in text for c in COMMENTS)
    before = text
    ww(conf, "node", "edit", "n2", editor=editor(tmp_path, "noop", "true"))   # saved unchanged: nothing
    assert (conf / "nodes.yaml").read_text() == before


def test_invalid_node_edit_is_shown_at_its_line_and_offered_again(conf, tmp_path):
    # 1st run: a bad MAC; 2nd run (after "y"): fixed
    ed = editor(tmp_path, "ed", """\
if grep -q 'hwaddr: "zz"' "$1"; then sed -i 's/hwaddr: "zz"/hwaddr: "52:54:00:00:00:33"/' "$1"
else sed -i 's/52:54:00:00:00:03/zz/' "$1"; fi""")
    out = ww(conf, "node", "edit", "n3", editor=ed, stdin="y\n")
    lines = out.stderr.splitlines()
    bad = next(line for line in lines if 'bad MAC "zz"' in line)
    frag_path, line_no = bad.split(":")[0], int(bad.split(":")[1])
    assert frag_path.endswith("nodes.yaml") and not frag_path.startswith(str(conf))
    assert runs(tmp_path, "ed") == 2
    assert resolved(conf)["n3"]["network devices"]["default"]["hwaddr"] == "52:54:00:00:00:33"
    # the reported line is the one with the bad value in the fragment the editor saw
    assert line_no > 3

    # refused again and the offer declined: nothing written
    before = (conf / "nodes.yaml").read_bytes()
    ed2 = editor(tmp_path, "ed2", "sed -i 's/52:54:00:00:00:33/zz/' \"$1\"")
    out = ww(conf, "node", "edit", "n3", editor=ed2, stdin="n\n", ok=False)
    assert "nothing written" in out.stderr and (conf / "nodes.yaml").read_bytes() == before
    # a whole-file problem (a MAC another node has) is reported at the fragment's line too
    ed3 = editor(tmp_path, "ed3", "sed -i 's/52:54:00:00:00:33/52:54:00:00:00:01/' \"$1\"")
    out = ww(conf, "node", "edit", "n3", editor=ed3, stdin="n\n", ok=False)
    assert "MAC 52:54:00:00:00:01 of node n3 is already used by n1" in out.stderr
    assert "wwfast-edit." in out.stderr.split("MAC 52:54")[0]
    assert (conf / "nodes.yaml").read_bytes() == before


def test_node_edit_adds_and_removes_entries(conf, tmp_path):
    ed = editor(tmp_path, "ed", """\
sed -i 's/^  n2:/  n9:/; s/52:54:00:00:00:02/52:54:00:00:00:09/; s/10.0.2.22/10.0.2.29/' "$1" """)
    out = ww(conf, "node", "edit", "n[2-3]", editor=ed)
    assert "node n2: removed" in out.stdout and "node n9: added" in out.stdout
    assert sorted(resolved(conf)) == ["n1", "n3", "n9"]


def test_profile_edit(conf, tmp_path):
    ed = editor(tmp_path, "ed", "sed -i 's/image name: demo/image name: other/' \"$1\"")
    out = ww(conf, "profile", "edit", "default", editor=ed)
    assert "profile default: image name: demo -> other" in out.stdout
    assert resolved(conf)["n1"]["image name"] == "other"


def test_export_then_import_round_trip(conf, tmp_path):
    exported = ww(conf, "node", "export", "n[1-2]").stdout
    assert exported.startswith("nodes:\n  n1:") and "n3" not in exported
    (tmp_path / "rack.yaml").write_text(exported.replace("n1:", "m1:").replace("n2:", "m2:")
                                        .replace(":00:01", ":01:01").replace(":00:02", ":01:02")
                                        .replace("10.0.2.21", "10.0.2.31").replace("10.0.2.22", "10.0.2.32"))
    out = ww(conf, "node", "import", str(tmp_path / "rack.yaml"), "--yes")
    assert "imported 2 nodes: m1, m2" in out.stdout and "node m1: added" in out.stdout
    db = resolved(conf)
    assert db["m2"]["network devices"]["default"]["hwaddr"] == "52:54:00:00:01:02"
    # replace: same names, a changed field
    (tmp_path / "n1.yaml").write_text("nodes:\n  n1:\n    profiles: [default]\n    image name: other\n")
    out = ww(conf, "node", "import", str(tmp_path / "n1.yaml"), "--yes")
    assert "node n1: image name: (unset) -> other" in out.stdout
    assert resolved(conf)["n1"]["network devices"]["default"]["hwaddr"] == ""   # replaced whole, as written
    # an invalid file names its own line; nothing written
    before = (conf / "nodes.yaml").read_bytes()
    (tmp_path / "bad.yaml").write_text("nodes:\n  x1:\n    profiles: [default]\n    imagename: demo\n")
    out = ww(conf, "node", "import", str(tmp_path / "bad.yaml"), "--yes", ok=False)
    assert f"{tmp_path / 'bad.yaml'}:4: nodes.x1.imagename: unknown key" in out.stderr
    assert (conf / "nodes.yaml").read_bytes() == before


def test_set_shows_the_change_and_asks_on_a_terminal(conf, tmp_path):
    out = ww(conf, "node", "set", "n1", "--image", "other")   # no terminal: shown, not asked
    assert "node n1: image name: (unset) -> other" in out.stdout
    assert resolved(conf)["n1"]["image name"] == "other"
    before = (conf / "nodes.yaml").read_bytes()
    script = f"{WWFAST} --conf {conf} node set n1 --image third; echo rc=$?"
    answer = subprocess.run(["script", "-qec", script, "/dev/null"], input="n\n", capture_output=True,
                            text=True, timeout=60)
    assert "Write 1 change? [y/N]" in answer.stdout and "rc=1" in answer.stdout
    assert (conf / "nodes.yaml").read_bytes() == before
    answer = subprocess.run(["script", "-qec", script.replace("third; echo", "fourth --yes; echo"), "/dev/null"],
                            capture_output=True, text=True, timeout=60)
    assert "[y/N]" not in answer.stdout and "rc=0" in answer.stdout
    ww(conf, "profile", "set", "default", "--init", "/bin/init", "--yes")
    db = resolved(conf)
    assert db["n1"]["image name"] == "fourth" and db["n1"]["init"] == "/bin/init"


def test_overlay_commands(conf, tmp_path):
    site = conf / "overlays"
    ww(conf, "overlay", "create", "motd")
    ww(conf, "overlay", "create", "motd", ok=False)
    ed = editor(tmp_path, "ed", "printf 'Welcome to {{ node.id }} ({{ node.ipmi.ipaddr }})\\n' > \"$1\"")
    ww(conf, "overlay", "edit", "motd", "etc/motd.j2", "--parents", "--mode", "0640", editor=ed)
    assert stat.S_IMODE((site / "motd" / "etc" / "motd.j2").stat().st_mode) == 0o640
    out = ww(conf, "overlay", "info", "motd", "etc/motd")
    assert "  node.id\n  node.ipmi.ipaddr\n" in out.stdout

    bad = editor(tmp_path, "bad", """\
if grep -q 'if' "$1"; then printf 'ok {{ node.id }}\\n' > "$1"; else printf 'line1\\n{%% if %%}\\n' > "$1"; fi""")
    out = ww(conf, "overlay", "edit", "motd", "etc/motd.j2", editor=bad, stdin="y\n")
    assert "motd.j2:2: template syntax" in out.stderr and runs(tmp_path, "bad") == 2
    assert (site / "motd" / "etc" / "motd.j2").read_text() == "ok {{ node.id }}\n"

    out = ww(conf, "overlay", "edit", "hostname", "etc/hostname.j2", editor=ed)   # a built-in one
    assert "built-in overlay copied to the site" in out.stderr
    assert (site / "hostname" / "etc" / "hostname.j2").read_text().startswith("Welcome")

    ww(conf, "overlay", "mkdir", "motd", "root/.ssh", "--mode", "0700")
    assert stat.S_IMODE((site / "motd" / "root" / ".ssh").stat().st_mode) == 0o700
    (tmp_path / "keys").write_text("ssh-ed25519 AAAA test\n")
    ww(conf, "overlay", "import", "motd", str(tmp_path / "keys"), "root/.ssh/authorized_keys")
    ww(conf, "overlay", "import", "motd", str(tmp_path / "keys"), "root/.ssh/authorized_keys", ok=False)
    ww(conf, "overlay", "chmod", "motd", "root/.ssh/authorized_keys", "0600")
    ww(conf, "overlay", "chown", "motd", "root/.ssh/authorized_keys", "1001", "1002")
    st = (site / "motd" / "root" / ".ssh" / "authorized_keys").stat()
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o600, 1001, 1002)
    ww(conf, "overlay", "edit", "motd", "../escape", editor=ed, ok=False)

    ww(conf, "node", "set", "n1", "--system-overlays", "wwinit,motd")
    out = ww(conf, "overlay", "delete", "motd", ok=False)
    assert "used by node n1" in out.stderr
    ww(conf, "overlay", "delete", "motd", "root/.ssh", "--force", "--parents")
    assert not (site / "motd" / "root").exists()
    ww(conf, "overlay", "delete", "hostname", "--force")    # the site copy goes; the built-in remains
    assert not (site / "hostname").exists()
    ww(conf, "overlay", "delete", "hostname", ok=False)


def test_help_shows_examples(capsys):
    from wwfast.cli import build_parser
    for args in (["node", "edit"], ["node", "export"], ["node", "import"], ["profile", "edit"],
                 ["overlay", "edit"], ["overlay", "info"], ["overlay", "build"], ["power", "on"],
                 ["node", "sensors"], ["node", "console"], ["overlay", "chown"]):
        with pytest.raises(SystemExit):
            build_parser().parse_args(args + ["--help"])
        assert "example" in capsys.readouterr().out, args


def test_overlay_build_takes_node_patterns(conf, tmp_path, project_root):
    subprocess.run([sys.executable, "-m", "stages.define", "--conf", str(conf), "--state", str(tmp_path / "var")],
                   cwd=project_root, check=True, capture_output=True, timeout=120)
    out = ww(conf, "overlay", "build", "n[1-2]")
    assert "n1: no archive yet" in out.stdout and "n3" not in out.stdout
    assert not (tmp_path / "var" / "build" / "overlays" / "n3").exists()
    out = ww(conf, "overlay", "build")
    assert "n3: no archive yet" in out.stdout and "1 node(s) rebuilt, 2 current" in out.stdout
    out = ww(conf, "overlay", "build", "n2", "--force")
    assert "n2: forced" in out.stdout and "1 node(s) rebuilt" in out.stdout
