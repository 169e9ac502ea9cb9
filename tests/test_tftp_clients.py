"""Real TFTP clients (tftp-hpa's `tftp`, `atftp`) fetch from our server: both core twins."""
import hashlib
import os
import socket
import subprocess

import pytest

from tftp_support import ServerThread, twin_params

pytestmark = pytest.mark.twin   # rerun by the pure-Python pass (make test)

# Edge sizes: empty, one byte short of / exactly / one past a 512 block, exact
# multiples of 512 and of iPXE's 1432, and a file of many blocks.
SIZES = [0, 1, 511, 512, 513, 1024, 1432 * 3, 65464, 200_003]
# 512-byte blocks past 65535 (block numbers roll over to 0), as a legacy PXE ROM fetches.
ROLLOVER_SIZE = 512 * 65536 + 1000
ATFTP_OPTIONS = [
    [],
    ["blksize 1432"],
    ["blksize 1432", "tsize 0"],
    ["timeout 2"],
    ["blksize 1432", "windowsize 4"],
    ["blksize 512", "windowsize 16", "tsize 0"],
    ["blksize 65464"],
    ["blksize 8"],
]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("tftproot")
    rnd = os.urandom(ROLLOVER_SIZE)
    for size in SIZES:
        (root / f"f{size}").write_bytes(rnd[:size])
    (root / "rollover").write_bytes(rnd)
    (root / "sub").mkdir()
    (root / "sub" / "ipxe.efi").write_bytes(b"inside" * 100)
    (root / "text.txt").write_bytes(b"line one\nline two\r\nbare CR \r end\n\n")
    outside = root.parent / "secret.txt"
    outside.write_bytes(b"do not serve")
    (root / "escape").symlink_to(outside)
    (root / "inside-link").symlink_to(root / "sub" / "ipxe.efi")
    return root


@pytest.fixture(scope="module", params=twin_params())
def server(request, root):
    with ServerThread(root, request.param) as srv:
        yield srv


def sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def hpa(port, remote, local, mode="octet"):
    return subprocess.run(["tftp", "-l", "-m", mode, "127.0.0.1", str(port), "-c", "get", remote, str(local)],
                          capture_output=True, text=True, timeout=60)


def atftp(port, remote, local, options=()):
    cmd = ["atftp"]
    for option in options:
        cmd += ["--option", option]
    cmd += ["-g", "-r", remote, "-l", str(local), "127.0.0.1", str(port)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def test_tftp_hpa_sizes(server, root, tmp_path):
    for size in SIZES:
        out = tmp_path / f"got{size}"
        result = hpa(server.port, f"f{size}", out)
        assert result.returncode == 0 and "rror" not in result.stdout + result.stderr, result
        assert sha(out) == sha(root / f"f{size}"), size
    assert server.stats()["completed"] >= len(SIZES)


@pytest.mark.parametrize("options", ATFTP_OPTIONS, ids=lambda o: "+".join(o) or "plain")
def test_atftp_sizes_and_options(server, root, tmp_path, options):
    for size in SIZES:
        if "blksize 8" in options and size > 65464:
            continue   # tiny blocks: the small files are enough (rollover is tested below)
        out = tmp_path / f"got{size}"
        result = atftp(server.port, f"f{size}", out, options)
        assert result.returncode == 0, (size, result)
        assert sha(out) == sha(root / f"f{size}"), (size, options)


def test_tftp_hpa_block_number_rollover(server, root, tmp_path):
    """65,538 blocks of 512 bytes: the block number wraps to 0 and the file is still exact."""
    out = tmp_path / "rollover"
    result = hpa(server.port, "rollover", out)
    assert result.returncode == 0, result
    assert sha(out) == sha(root / "rollover")


def test_atftp_rollover_small_blocks_windowed(server, root, tmp_path):
    """blksize 8, windowsize 4: 25,000 blocks per 200 KB; rollover with a window over the wrap."""
    data = (root / "rollover").read_bytes()[:8 * 65536 + 77]
    (root / "small-rollover").write_bytes(data)
    out = tmp_path / "small-rollover"
    result = atftp(server.port, "small-rollover", out, ["blksize 8", "windowsize 4"])
    assert result.returncode == 0, result
    assert out.read_bytes() == data


def test_netascii_round_trip(server, root, tmp_path):
    out = tmp_path / "text"
    result = hpa(server.port, "text.txt", out, mode="netascii")
    assert result.returncode == 0, result
    assert out.read_bytes() == (root / "text.txt").read_bytes()


def test_subdirectory_backslashes_and_absolute_inside_root(server, root, tmp_path):
    expected = (root / "sub" / "ipxe.efi").read_bytes()
    for name in ("sub/ipxe.efi", "sub\\ipxe.efi", "/sub/ipxe.efi".replace("/sub", str(root) + "/sub"),
                 "inside-link", "./sub//ipxe.efi"):
        out = tmp_path / "got"
        result = hpa(server.port, name, out)
        assert result.returncode == 0 and "rror" not in result.stdout + result.stderr, (name, result)
        assert out.read_bytes() == expected, name


@pytest.mark.parametrize("name", ["../secret.txt", "sub/../../secret.txt", "..\\secret.txt",
                                  "/etc/passwd", "escape"])
def test_paths_leading_out_are_refused(server, tmp_path, name):
    result = hpa(server.port, name, tmp_path / "got")
    assert "Error code 2" in result.stdout + result.stderr, result
    assert not (tmp_path / "got").exists() or (tmp_path / "got").read_bytes() != b"do not serve"


def test_missing_file_is_error_1(server, tmp_path):
    result = hpa(server.port, "no-such-file", tmp_path / "got")
    assert "Error code 1" in result.stdout + result.stderr, result


def test_write_requests_are_refused(server, root, tmp_path):
    local = tmp_path / "upload"
    local.write_bytes(b"x" * 1000)
    result = subprocess.run(["tftp", "-m", "octet", "127.0.0.1", str(server.port), "-c", "put", str(local),
                             "uploaded"], capture_output=True, text=True, timeout=30)
    assert "Error code 2" in result.stdout + result.stderr, result
    assert not (root / "uploaded").exists()


def test_resolve_answers_per_node_scripts(root, tmp_path):
    """resolve(path) -> bytes / a file name / None (fall back to the root)."""
    script = tmp_path / "n001.ipxe"
    script.write_bytes(b"#!ipxe\nchain http://10.0.2.2:9873/ipxe/${mac}\n")
    asked = []

    def resolve(path):
        asked.append(path)
        if path == "52:54:00:00:00:01.ipxe":
            return b"#!ipxe\necho by bytes\n"
        if path == "ipxe/52:54:00:00:00:02":
            return str(script)
        return None

    for core_name in [p.values[0] for p in twin_params()]:
        with ServerThread(root, core_name, resolve=resolve) as srv:
            out = tmp_path / "out"
            assert hpa(srv.port, "52:54:00:00:00:01.ipxe", out).returncode == 0
            assert out.read_bytes() == b"#!ipxe\necho by bytes\n"
            assert hpa(srv.port, "ipxe/52:54:00:00:00:02", out).returncode == 0
            assert out.read_bytes() == script.read_bytes()
            assert hpa(srv.port, "f513", out).returncode == 0
            assert out.read_bytes() == (root / "f513").read_bytes()
    assert "ipxe/52:54:00:00:00:02" in asked and "f513" in asked


def test_standalone_runner_with_two_reuseport_workers(root, tmp_path):
    """`python -m wwfast.server.tftp --workers 2`: both processes share the port, clients are served."""
    import signal
    import socket
    import sys

    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    proc = subprocess.Popen([sys.executable, "-m", "wwfast.server.tftp", "--root", str(root), "--bind",
                             "127.0.0.1", "--port", str(port), "--workers", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert "serving" in proc.stdout.readline()
        for i in range(8):   # different source ports: SO_REUSEPORT spreads them over the workers
            out = tmp_path / f"got{i}"
            result = hpa(port, "f65464", out)
            assert result.returncode == 0, result
            assert sha(out) == sha(root / "f65464")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0, proc.stderr.read()


@pytest.mark.parametrize("core", twin_params())
def test_ipv6(root, tmp_path, core):
    if not socket.has_ipv6 or not os.path.exists("/proc/net/if_inet6"):
        pytest.skip("no IPv6 on this host")
    with ServerThread(root, core, host="::1") as srv:
        for name, options in (("f513", []), ("f200003", ["blksize 1432", "windowsize 4", "tsize 0"])):
            out = tmp_path / name
            result = atftp_at("::1", srv.port, name, out, options)
            assert result.returncode == 0, result
            assert sha(out) == sha(root / name)
        result = subprocess.run(["tftp", "-6", "-m", "octet", "::1", str(srv.port), "-c", "get", "f1024",
                                 str(tmp_path / "hpa")], capture_output=True, text=True, timeout=30)
        assert result.returncode == 0 and sha(tmp_path / "hpa") == sha(root / "f1024"), result


def atftp_at(host, port, remote, local, options=()):
    cmd = ["atftp"]
    for option in options:
        cmd += ["--option", option]
    cmd += ["-g", "-r", remote, "-l", str(local), host, str(port)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)
