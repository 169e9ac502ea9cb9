"""Go's own text/template + sprig as a reference renderer (tests/helpers/goref/main.go).

Built once with Debian's golang-go and golang-github-masterminds-sprig-dev (GOPATH mode, no network)
and cached under ~/.cache/wwfast/goref by the source's digest.
"""
import hashlib
import json
import os
import pathlib
import shutil
import subprocess

SOURCE = pathlib.Path(__file__).with_name("goref") / "main.go"
GOPATH = "/usr/share/gocode"


def available():
    return shutil.which("go") is not None and os.path.isdir(f"{GOPATH}/src/github.com/Masterminds/sprig")


def binary():
    digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:16]
    cache = pathlib.Path(os.environ.get("XDG_CACHE_HOME", pathlib.Path.home() / ".cache")) / "wwfast" / "goref"
    exe = cache / f"goref-{digest}"
    if not exe.exists():
        cache.mkdir(parents=True, exist_ok=True)
        work = cache / f"src-{digest}-{os.getpid()}"
        work.mkdir()
        shutil.copy(SOURCE, work / "main.go")
        env = dict(os.environ, GO111MODULE="off", GOPATH=GOPATH, GOFLAGS="",
                   GOCACHE=str(cache / "gocache"))
        tmp = cache / f".goref-{digest}.{os.getpid()}"
        subprocess.run(["go", "build", "-o", str(tmp), "main.go"], cwd=work, env=env, check=True,
                       capture_output=True, timeout=600)
        os.replace(tmp, exe)
        shutil.rmtree(work, ignore_errors=True)
    return exe


def render_all(cases):
    """[(template, data)] -> [(output, error text)] from Go, in one process."""
    lines = "".join(json.dumps({"template": t, "data": d}) + "\n" for t, d in cases)
    proc = subprocess.run([str(binary())], input=lines, capture_output=True, text=True, check=True, timeout=300)
    results = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(results) == len(cases), proc.stderr
    return [(r["out"], r["err"]) for r in results]
