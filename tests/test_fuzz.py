"""The fuzz targets (tests/fuzz/targets.py) on their seed corpus and on a short, seeded run of
the plain mutation fuzzer, plus every saved finding under tests/fuzz/regressions/. The real
fuzzing runs in CI (.ci/fuzz) and for longer by hand (docs/security.md)."""

from __future__ import annotations

import os
import random
import sys
import time

import pytest

pytest.importorskip("gguf")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "fuzz"))

import run as fuzz_run  # noqa: E402
from seeds import write_seeds  # noqa: E402
from targets import TARGETS  # noqa: E402

REGRESSIONS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fuzz", "regressions")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, tokenizer_path):
    out = str(tmp_path_factory.mktemp("fuzz-corpus"))
    return out, write_seeds(out, tokenizer_path)


def test_seeds_pass_every_target(corpus):
    """Valid files must go through without any error (a GGUF seed converts and its .gcpp loads)."""
    _, seeds = corpus
    assert set(seeds) == set(TARGETS) and all(seeds.values())
    for target, paths in seeds.items():
        for p in paths:
            TARGETS[target](open(p, "rb").read())


@pytest.mark.parametrize("target,n", [("config", 2000), ("safetensors", 200), ("gcpp", 150), ("gguf", 60)])
def test_mutations_get_only_the_projects_errors(corpus, target, n):
    """A short plain-fuzzer run (fixed seed): each mutated file is refused with the project's own
    error or read correctly; the target raises anything else."""
    out, _ = corpus
    files = [open(os.path.join(out, target, f), "rb").read() for f in sorted(os.listdir(os.path.join(out, target)))]
    rng = random.Random(15)
    t0 = time.monotonic()
    for _ in range(n):
        TARGETS[target](fuzz_run.mutate(rng.choice(files), files, rng))
    assert time.monotonic() - t0 < 120, "inputs this small must not take this long (a near-hang?)"


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_saved_findings(target):
    d = os.path.join(REGRESSIONS, target)
    for name in sorted(os.listdir(d)) if os.path.isdir(d) else []:
        TARGETS[target](open(os.path.join(d, name), "rb").read())


def test_plain_fuzzer_reports_a_finding(tmp_path):
    """The runner's own check: a target that raises is reported, its input saved, exit status 1."""
    (tmp_path / "seed").write_bytes(b"{}")

    def target(data):
        raise KeyError("boom")

    rc = fuzz_run.plain(target, str(tmp_path), 5, str(tmp_path / "art"), seed=0)
    assert rc == 1 and os.listdir(tmp_path / "art") == ["crash-0"]
