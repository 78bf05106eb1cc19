"""Sampled speculative decoding keeps the model's distribution exactly (the Leviathan/Chen
rejection rule, csrc/decode/speculative.cpp): a chi-square test of the first two sampled tokens
over many seeds against the exact joint distribution, computed in numpy from the model's logits
through the whole sampling pipeline (repetition penalty, temperature, top-k).

The seeds are fixed, so each test gives the same verdict every run. The threshold ALPHA = 1e-3
is the chance that a correct implementation fails for a fresh set of seeds (e.g. after a change
in how random numbers are consumed); the test's power is shown on the same N and the same exact
p and q: `simulate` draws with the rule and with two classic wrong ones in numpy, and those must
be rejected at p < 1e-6 while the right rule passes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gemma_cpp import Model

ALPHA = 1e-3
N = 2000  # generations per test: ~2 ms each on the tiny model
PARAMS = dict(temperature=0.6, top_k=6, repetition_penalty=1.3)


def chi2_sf(x: float, df: int) -> float:
    """P(X >= x) for X ~ chi-square(df): the regularised upper incomplete gamma Q(df/2, x/2)
    (series below a + 1, Lentz's continued fraction above; Numerical Recipes 6.2)."""
    a, z = df / 2.0, x / 2.0
    if z <= 0:
        return 1.0
    lg = a * math.log(z) - z - math.lgamma(a)
    if z < a + 1:
        term = total = 1.0 / a
        n = a
        while abs(term) > 1e-15 * abs(total):
            n += 1
            term *= z / n
            total += term
        return max(0.0, 1.0 - total * math.exp(lg))
    b = z + 1 - a
    c, d = 1e300, 1 / b
    h = d
    for i in range(1, 10000):
        an = -i * (i - a)
        b += 2
        d = an * d + b
        d = 1 / d if abs(d) > 1e-300 else 1e300
        c = b + an / c if abs(c) > 1e-300 else b + an * 1e300
        delta = d * c
        h *= delta
        if abs(delta - 1) < 1e-15:
            break
    return math.exp(lg) * h


def test_chi2_sf_against_known_values():
    # scipy.stats.chi2.sf(x, df) (scipy 1.17), series and continued-fraction branches both
    for x, df, p in ((3.841459, 1, 0.04999999465319563), (23.209251, 10, 0.010000000547937338),
                     (59.70291, 30, 0.0010000428672895276), (4.0, 4, 0.40600584970983794),
                     (150.0, 100, 0.0009039320423540184), (0.5, 3, 0.9188914116546758)):
        assert chi2_sf(x, df) == pytest.approx(p, rel=1e-9)


def chi2_pvalue(counts: dict, expected: dict, n: int) -> float:
    """Pearson's test of observed counts against probabilities; outcomes expected fewer than 5
    times are pooled into one bin (and the pool too when below 5, into the smallest bin)."""
    obs, exp, pool_o, pool_e = [], [], 0, 0.0
    for key, pr in expected.items():
        if n * pr >= 5:
            obs.append(counts.get(key, 0))
            exp.append(n * pr)
        else:
            pool_o += counts.get(key, 0)
            pool_e += n * pr
    pool_o += sum(c for k, c in counts.items() if k not in expected)  # impossible outcomes land here
    if pool_e >= 5 or pool_o:
        obs.append(pool_o)
        exp.append(max(pool_e, 1e-12))
    stat = sum((o - e) ** 2 / e for o, e in zip(obs, exp))
    return chi2_sf(stat, len(obs) - 1)


def pipeline(logits: np.ndarray, history: list[int], *, temperature: float, top_k: int = 0,
             repetition_penalty: float = 1.0) -> np.ndarray:
    """docs/sampling.md's order in numpy: repetition penalty, temperature, top-k, softmax."""
    x = logits.astype(np.float64).copy()
    seen = sorted(set(history))
    x[seen] = np.where(x[seen] > 0, x[seen] / repetition_penalty, x[seen] * repetition_penalty)
    x /= temperature
    if top_k:
        x[np.argsort(-x, kind="stable")[top_k:]] = -np.inf
    e = np.exp(x - x.max())
    return e / e.sum()


def exact_joint(m: Model, prompt: list[int], params: dict) -> dict:
    """P(first two tokens) under the model's sampling, outcomes with probability > 0."""
    p1 = pipeline(m.logits(prompt)[-1], prompt, **params)
    out = {}
    for a in np.flatnonzero(p1):
        p2 = pipeline(m.logits(prompt + [int(a)])[-1], prompt + [int(a)], **params)
        for b in np.flatnonzero(p2):
            out[(int(a), int(b))] = p1[a] * p2[b]
    return out


def simulate(p: np.ndarray, q: np.ndarray, rule: str, n: int, rng) -> np.ndarray:
    """n tokens of one speculative position drawn in numpy: the draft from q, then `rule`."""
    out = np.empty(n, dtype=np.int64)
    for i in range(n):
        d = rng.choice(len(q), p=q)
        if rule == "always-accept" or rng.random() * q[d] < p[d]:
            out[i] = d
            continue
        r = p if rule == "resample-from-p" else np.maximum(p - q, 0)
        out[i] = rng.choice(len(p), p=r / r.sum())
    return out


@pytest.fixture(scope="module")
def target(make_gcpp):
    return Model(make_gcpp("g3"), n_threads=1)


def _prompt(seed: int) -> list[int]:
    return [2] + [int(t) for t in np.random.default_rng(seed).integers(4, 512, 11)]


def _sampled_counts(m: Model, prompt: list[int], **spec) -> tuple[dict, float]:
    counts: dict = {}
    drafted = accepted = 0
    for s in range(N):
        g = m.generate(prompt, max_new_tokens=3, seed=s, ignore_eos=True, stream=True, **PARAMS, **spec)
        ids = list(g)
        counts[tuple(ids[:2])] = counts.get(tuple(ids[:2]), 0) + 1
        drafted += g.speculation.drafted
        accepted += g.speculation.accepted
    return counts, accepted / max(drafted, 1)


def test_draft_model_sampling_keeps_the_distribution(target, make_gcpp):
    # The same checkpoint at int4 drafts: close to the target but not equal (q != p), so both
    # acceptances and rejections with a real residual max(0, p - q) happen.
    draft = Model(make_gcpp("g3", dtype="int4"), n_threads=1)
    prompt = _prompt(5)
    expected = exact_joint(target, prompt, PARAMS)
    counts, acceptance = _sampled_counts(target, prompt, draft_model=draft, draft_len=2)
    assert 0.2 < acceptance < 0.95, acceptance  # both paths were taken
    assert chi2_pvalue(counts, expected, N) > ALPHA

    # Power, on this position's exact p and q: the right rule passes, wrong ones are caught.
    p = pipeline(target.logits(prompt)[-1], prompt, **PARAMS)
    q = pipeline(draft.logits(prompt)[-1], [], temperature=PARAMS["temperature"], top_k=PARAMS["top_k"])
    exp1 = {int(i): p[i] for i in np.flatnonzero(p)}
    rng = np.random.default_rng(0)
    for rule, ok in (("right", True), ("resample-from-p", False), ("always-accept", False)):
        toks = simulate(p, q, rule, N, rng)
        pv = chi2_pvalue(dict(zip(*np.unique(toks, return_counts=True))), exp1, N)
        assert (pv > ALPHA) if ok else (pv < 1e-6), (rule, pv)


def test_ngram_sampling_keeps_the_distribution(target):
    # Prompt lookup drafts with certainty (q a point mass): accept with probability p(d), else draw
    # from p without d. The prompt ends in a repeated token that the model tends to repeat (p ~ 0.6,
    # found by a search over a few prompts), so the lookup drafts it and it is often accepted.
    prompt = _prompt(3) + [396] * 3
    expected = exact_joint(target, prompt, PARAMS)
    counts, acceptance = _sampled_counts(target, prompt, speculative="ngram", draft_len=2, ngram_min=1)
    assert acceptance > 0.05, acceptance
    assert chi2_pvalue(counts, expected, N) > ALPHA
