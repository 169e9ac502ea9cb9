"""Warewulf's template functions and data in `.ww` overlay templates, each against its expected text,
rendered through the overlay renderer for a node (and errors naming the template, line and node)."""
import os

import pytest

from helpers.ww_nodes import disk_node, nodes
from wwfast.builder.render import RenderError, Renderer
from wwfast.builder.template_views import node_view
from wwfast.define.settings import Settings


@pytest.fixture
def env(tmp_path):
    conf, state = tmp_path / "conf", tmp_path / "state"
    (conf / "keys").mkdir(parents=True)
    (conf / "banner.txt").write_text("line one\nline two\n")
    (conf / "hosts.local").write_text("10.9.9.9 extra\n# wwfast: do not edit below\n10.0.0.1 generated\n")
    (state / "ssh").mkdir(parents=True)
    (state / "ssh" / "ssh_host_ed25519_key.pub").write_text("ssh-ed25519 AAAA host\n")
    rootfs = state / "images" / "rocky" / "rootfs" / "etc"
    rootfs.mkdir(parents=True)
    (rootfs / "os-release").write_text('NAME="Rocky"\n')
    os.symlink("/usr/share/zoneinfo/Etc/UTC", tmp_path / "zone")
    all_nodes = dict(nodes(), **{"n-disk": disk_node()})
    renderer = Renderer(Settings(address="10.0.2.2", netmask="255.255.255.0"), all_nodes, str(conf), str(state))

    def render(text, node="n-static", rel="etc/out"):
        path = tmp_path / f"t{abs(hash(text))}.ww"
        path.write_text(text)
        files, _ = renderer.render(str(path), rel, node_view(all_nodes[node]), "test", 0o644, 0, 0)
        return [(f.rel, f.data.decode() if f.target is None else "-> " + f.target) for f in files]
    render.tmp = tmp_path
    return render


def one(files):
    assert len(files) == 1, files
    return files[0][1]


def test_include_reads_server_files_relative_to_the_conf_dir(env):
    assert one(env('{{ Include "banner.txt" }}|')) == "line one\nline two|"   # one trailing newline trimmed
    assert one(env('[{{ Include "missing.txt" }}]')) == "[]"                  # missing: empty, as Warewulf
    assert one(env('{{ Include "keys/ssh_host_ed25519_key.pub" }}')) == "ssh-ed25519 AAAA host"  # STATE/ssh


def test_include_from_reads_the_image(env):
    assert one(env('{{ IncludeFrom .ImageName "/etc/os-release" }}')) == 'NAME="Rocky"'
    assert one(env('[{{ IncludeFrom "nope" "/etc/os-release" }}]')) == "[]"


def test_include_block_stops_at_the_marker(env):
    assert one(env('{{ IncludeBlock "hosts.local" "# wwfast: do not edit below" }}')) == \
        "10.9.9.9 extra\n# wwfast: do not edit below"
    assert one(env('{{ IncludeBlock "none" "MARK" }}')) == "MARK"


def test_file_splits_output_and_softlink_links(env):
    out = env('head{{ file "a.conf" }}A{{ file "/etc/abs/b.conf" }}B{{ file "c" }}{{ softlink "/target" }}',
              rel="etc/dir/t")
    assert out == [("etc/dir/a.conf", "A"), ("etc/abs/b.conf", "B"), ("etc/dir/c", "-> /target")]
    assert env('{{ softlink "/usr/share/zoneinfo/UTC" }}') == [("etc/out", "-> /usr/share/zoneinfo/UTC")]
    with pytest.raises(RenderError, match="escapes"):
        env('{{ file "../../../../x" }}x')


def test_readlink_and_importlink_resolve_server_symlinks(env):
    zone = env.tmp / "zone"
    resolved = os.path.realpath(zone)
    assert one(env(f'{{{{ readlink "{zone}" }}}}')) == resolved
    assert env(f'{{{{ ImportLink "{zone}" }}}}') == [("etc/out", "-> " + resolved)]
    with pytest.raises(RenderError, match="ImportLink"):
        env('{{ ImportLink "/nonexistent/link" }}')


def test_abort_writes_no_file_and_nobackup_is_accepted(env):
    assert env('text{{ abort }}more') == []
    assert one(env('{{ nobackup }}kept')) == "kept"


def test_unique_field_keeps_the_first_of_each_name(env):
    text = '{{ UniqueField ":" 0 "root:x:0\\nbob:x:1\\n\\nroot:y:2\\nnofield" }}'
    assert one(env(text)) == "root:x:0\nbob:x:1\n\nnofield"


def test_small_helpers(env):
    assert one(env('{{ basename "/a/b/c.conf" }} {{ inc 4 }} {{ dec 4 }}')) == "c.conf 5 3"
    assert one(env('{{ SystemdEscapePath "/scratch-data//x/" }} {{ SystemdEscape "a/b.c-d" }}')) == \
        "scratch\\x2ddata-x a-b.c\\x2dd"


def test_ignition_json(env):
    assert one(env("[{{ IgnitionJson }}]")) == "[]"
    text = one(env("{{ IgnitionJson }}", node="n-disk"))
    assert text.startswith('{"ignition":{"version":"3.1.0"},"storage":{"disks":[{"device":"/dev/vda",'
                           '"partitions":[{"label":"scratch"')
    assert '{"device":"/dev/disk/by-partlabel/scratch","format":"btrfs","mountOptions":["defaults","noatime"],' \
           '"path":"/scratch","wipeFilesystem":true}' in text


def test_template_data_as_warewulf_has_it(env):
    text = one(env('{{ .Id }} {{ .Hostname }} {{ .Ipaddr }} {{ .NetworkCIDR }} {{ .ImageName }} '
                   '{{ .Kernel.Args | join "," }} {{ .PrimaryNetDev }} {{ .NetDevs.default.Ipaddr }} '
                   '{{ .NetDevs.default.IpCIDR }} {{ .NetDevs.default.Primary }} {{ .NetDevs.default.Ipaddr6 }} '
                   '{{ .Tags.missing }} [{{ index .Tags "missing" }}] {{ .Ipmi.Write.Bool }} {{ len .AllNodes }} '
                   '{{ .ThisNode.Id }} {{ .Overlay }} {{ .Warewulf.Port }} {{ .Dhcp.Enabled }}'))
    assert text == ("n-static n-static 10.0.2.2 10.0.2.0/24 rocky quiet,crashkernel=no default 10.0.2.21 "
                    "10.0.2.21/24 true <nil> <no value> [] false 8 n-static test 9873 false")
    two = one(env("{{ range $n := .AllNodes }}{{ if eq $n.Id $.Id }}me{{ else }}{{ $n.Id }}{{ end }} {{ end }}",
                  node="n-two"))
    assert two == "n-bond n-dhcp n-disk n-ib n-static me n-v6 n-vlan "


def test_errors_name_template_line_and_node(env):
    with pytest.raises(RenderError) as info:
        env("ok\n{{ .Id }}\n{{ lower .NetDevs }}\n", node="n-two")
    e = info.value
    assert e.line == 3 and e.node == "n-two" and e.template.endswith(".ww")
    assert "wrong type for value; expected string" in str(e)
    with pytest.raises(RenderError) as info:
        env("a\n{{ if }}\n")
    assert info.value.line == 2 and "missing value for if" in str(info.value)
    with pytest.raises(RenderError, match="can't evaluate field Nope"):
        env("{{ .NetDevs.default.Nope }}")
