"""The Debian image builder's inputs and cache (the build itself runs in tests/test_debian_boot.py)."""
import pathlib

from wwfast.builder import debian_image

DEB822 = """Types: deb
# a comment
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main

Types: deb
URIs: https://other.example/node
Suites: nodistro
Components: main
"""


def fake_etc(tmp_path, extra_list="deb http://vendor.example/apt cloud-sdk-bookworm main\n"):
    etc = tmp_path / "apt"
    (etc / "sources.list.d").mkdir(parents=True)
    (etc / "sources.list.d" / "debian.sources").write_text(DEB822)
    (etc / "sources.list.d" / "vendor.list").write_text(extra_list)
    (etc / "sources.list").write_text("# nothing here\ndeb [arch=amd64] http://old.example/debian bookworm main\n")
    return etc


def test_apt_sources_keep_only_the_suites_entries(tmp_path):
    text = debian_image.apt_sources("bookworm", str(fake_etc(tmp_path)))
    assert "deb [arch=amd64] http://old.example/debian bookworm main" in text
    assert "Suites: bookworm bookworm-updates" in text and "Suites: bookworm-security" in text
    assert "nodistro" not in text and "cloud-sdk-bookworm" not in text and "# a comment" not in text


def test_cache_key_follows_packages_and_sources(tmp_path, monkeypatch):
    sources = debian_image.apt_sources("bookworm", str(fake_etc(tmp_path)))
    key = debian_image.cache_key(sources)
    assert key == debian_image.cache_key(sources)
    assert key != debian_image.cache_key(sources + "deb http://x.example/debian bookworm contrib\n")
    monkeypatch.setattr(debian_image, "PACKAGES", debian_image.PACKAGES + ("vim",))
    assert key != debian_image.cache_key(sources)


def test_a_cached_image_is_not_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setattr(debian_image, "apt_sources", lambda suite: "deb http://m.example/debian bookworm main\n")
    cached = debian_image.cached_path(tmp_path)
    cached.write_bytes(b"image")
    monkeypatch.setattr(debian_image.subprocess, "run", lambda *a, **k: (_ for _ in ()).throw(AssertionError("ran")))
    lines = []
    path, seconds = debian_image.build(tmp_path, log=lines.append)
    assert path == cached and seconds == 0.0 and pathlib.Path(path).read_bytes() == b"image"
    assert "cached" in lines[0]


def test_mmdebstrap_command_is_small_and_from_the_given_sources(tmp_path):
    args = debian_image.mmdebstrap_args(tmp_path / "debian.sources", tmp_path / "out.tar.zst")
    assert args[0] == "mmdebstrap" and "--variant=apt" in args
    assert args[-3:] == ["bookworm", str(tmp_path / "out.tar.zst"), str(tmp_path / "debian.sources")]
    include = next(a for a in args if a.startswith("--include="))
    for pkg in ("systemd", "linux-image-amd64", "iproute2", "curl", "openssh-server", "cpio"):
        assert pkg in include.split("=", 1)[1].split(",")
    assert "--dpkgopt=path-exclude=/usr/share/doc/*" in args
