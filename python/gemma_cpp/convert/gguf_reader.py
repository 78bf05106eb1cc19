"""Reader for GGUF files of Gemma models (llama.cpp architectures gemma, gemma2, gemma3).

`read_gguf(path)` describes the file as a ModelSource: the config is rebuilt from the GGUF
metadata with the rules llama.cpp applies when it loads such a file (src/llama-model.cpp), the
tensors are dequantised to float32 (any type the `gguf` package can dequantise: F32, F16, BF16,
Q4_0/1, Q5_0/1, Q8_0, the K-quants, IQ*, ...) and re-stored in the requested dtype, and the
SentencePiece tokenizer is rebuilt from `tokenizer.ggml.*` (see sp_builder.py).

llama.cpp's converter (convert_hf_to_gguf.py, GemmaModel / Gemma2Model / Gemma3Model) changes
the checkpoint in ways we undo here:

* every `*norm.weight` is stored as 1 + w (Gemma's RMSNorm multiplies by 1 + w; ggml's by w).
  We subtract 1: our runtime, like transformers, applies 1 + w;
* tensors are renamed (token_embd, blk.N.attn_q, ...; see _NAMES) and their dims listed in
  ggml order (fastest first): the numpy shape is the reverse, which is transformers' [out, in];
* q/k rows are NOT permuted for Gemma (llama.cpp permutes them only for the llama architecture,
  whose rope is the interleaved kind; Gemma uses the NeoX/rotate-half rope as transformers does);
* embedding rows beyond the tokenizer's vocabulary are dropped (Gemma 3 multimodal: 262208 -> 262144);
* facts llama.cpp hard-codes are not in the file: Gemma 2 slides even layers (pattern 2) with a
  default window of 4096; Gemma 3 slides layer i unless (i + 1) % 6 == 0, with rope base 10000 on
  sliding layers; the query scale is head_dim^-0.5 except for the 27B models (46-layer Gemma 2,
  62-layer Gemma 3), where it is (d_model / n_heads)^-0.5. Newer keys are honoured when present:
  `{arch}.attention.sliding_window_pattern` (a period or a per-layer bool list),
  `{arch}.rope.freq_base_swa`, `{arch}.rope.scaling.{type,factor}` and `{arch}.attention.scale`.
"""

from __future__ import annotations

import os
import re
from typing import Any, Callable

import numpy as np

from .. import __version__
from ..gcpp_format import ModelSource, TensorSpec
from . import config as cfgmod
from . import gguf_native
from ._defaults import GGUF_DEFAULT_DTYPE, SOURCE
from .gguf_config import ARCHS, GGUFConvertError, hf_config_from_gguf, meta_int
from .gguf_file import GGUFError, GGUFFile, supports
from .sp_builder import TokenizerError, build_sentencepiece

# GGUF tensor names (after "blk.N.") -> ours. Gemma 1's pre-MLP norm (transformers'
# post_attention_layernorm) is llama.cpp's ffn_norm; Gemma 2/3's post_attention_layernorm is
# post_attention_norm and pre_feedforward_layernorm is ffn_norm.
_NAMES = {
    "attn_norm": "attn_norm",
    "attn_q": "qkv#q",
    "attn_k": "qkv#k",
    "attn_v": "qkv#v",
    "attn_output": "o",
    "attn_q_norm": "q_norm",
    "attn_k_norm": "k_norm",
    "post_attention_norm": "post_attn_norm",
    "ffn_norm": "ffn_norm",
    "ffn_gate": "gate_up#gate",
    "ffn_up": "gate_up#up",
    "ffn_down": "down",
    "post_ffw_norm": "post_ffn_norm",
}
_BLK = re.compile(r"^blk\.(\d+)\.([a-z_]+)\.weight$")


def _special(g: GGUFFile, tokens: list[str], arch: str) -> dict[str, Any]:
    def tid(name: str) -> int | None:
        v = g.get(f"tokenizer.ggml.{name}")
        return None if v is None else meta_int(v, f"{g.path}: tokenizer.ggml.{name}")

    def piece(p: str) -> int | None:
        try:
            return tokens.index(p)
        except ValueError:
            return None

    bos, eos, unk, pad = tid("bos_token_id"), tid("eos_token_id"), tid("unknown_token_id"), tid("padding_token_id")
    if bos is None:
        raise GGUFConvertError(f"{g.path}: tokenizer.ggml.bos_token_id is missing")
    sot, eot = piece("<start_of_turn>"), piece("<end_of_turn>")
    eos_ids = set() if eos is None else {eos}
    for extra in ("eot_token_id", "eom_token_id"):
        v = tid(extra)
        if v is not None:
            eos_ids.add(v)
    if arch == "gemma3" and eot is not None:  # generation_config.json of Gemma 3: eos_token_id [1, 106]
        eos_ids.add(eot)
    return {"bos": bos, "eos": sorted(eos_ids), "pad": pad, "unk": unk, "start_of_turn": sot,
            "end_of_turn": eot}


def read_gguf(path: str, *, dtype: str = GGUF_DEFAULT_DTYPE, embed_dtype: str | None = None) -> ModelSource:
    """Describe the GGUF file at `path` as a ModelSource (tensors are read lazily, one at a time,
    when the writer asks for them). dtype "source" keeps each tensor at its source precision
    (gguf_native.py); with any dtype, a tensor whose blocks the dtype holds exactly is copied,
    not dequantised and rounded again."""
    try:
        g = GGUFFile(path)
    except GGUFError as e:
        raise GGUFConvertError(str(e)) from None
    arch = g.get("general.architecture")
    if arch is None:
        raise GGUFConvertError(f"{path}: metadata key 'general.architecture' is missing")
    if not isinstance(arch, str) or arch not in ARCHS:
        raise GGUFConvertError(f"{path}: GGUF architecture {arch!r} is not supported "
                               f"(supported: {', '.join(ARCHS)})")

    # ---- tokenizer
    tok_model = g.get("tokenizer.ggml.model")
    if tok_model is None:
        raise GGUFConvertError(f"{path}: tokenizer.ggml.model is missing; the file carries no tokenizer")
    if not isinstance(tok_model, str) or tok_model != "llama":
        raise GGUFConvertError(f"{path}: tokenizer.ggml.model={tok_model!r} is not supported (Gemma files use "
                               f"'llama', i.e. SentencePiece)")
    tokens = g.get("tokenizer.ggml.tokens")
    if not isinstance(tokens, list) or not tokens:
        raise GGUFConvertError(f"{path}: tokenizer.ggml.tokens is missing or empty")
    if not all(isinstance(t, str) for t in tokens):
        raise GGUFConvertError(f"{path}: tokenizer.ggml.tokens must be an array of strings")
    special = _special(g, tokens, arch)
    try:
        tok_bytes = build_sentencepiece(
            tokens, g.get("tokenizer.ggml.scores"), g.get("tokenizer.ggml.token_type"),
            bos=special["bos"], eos=_opt(g, "eos_token_id"), unk=_opt(g, "unknown_token_id"),
            pad=_opt(g, "padding_token_id"),
            # every Gemma SentencePiece model has add_dummy_prefix=false; llama.cpp writes the key
            add_dummy_prefix=bool(g.get("tokenizer.ggml.add_space_prefix", False)), where=path)
    except TokenizerError as e:
        raise GGUFConvertError(str(e)) from None
    vocab = len(tokens)

    # ---- config
    try:
        hf_cfg = hf_config_from_gguf(g, vocab)
        cfg = cfgmod.normalize(hf_cfg, f"{path} (GGUF metadata)")
    except cfgmod.ConfigError as e:
        raise GGUFConvertError(str(e)) from None
    plan = cfgmod.tensor_plan(cfg)

    # ---- tensors
    found: dict[str, str] = {}
    for name, info in g.tensors.items():
        if name == "token_embd.weight":
            ours = "embed"
        elif name == "output_norm.weight":
            ours = "final_norm"
        elif name == "output.weight":
            raise GGUFConvertError(f"{path}: the file has a separate output matrix 'output.weight'; "
                                   f"Gemma ties it to the embedding and untied outputs are not supported")
        else:
            m = _BLK.match(name)
            part = _NAMES.get(m.group(2)) if m else None
            if part is None:
                raise GGUFConvertError(f"{path}: unexpected tensor {name!r} for a {arch} model")
            ours = f"layers.{m.group(1)}.{part}"
        if not supports(info.ggml_type):
            raise GGUFConvertError(f"{path}: tensor {name!r} is stored as {info.type_name}, which the installed "
                                   f"gguf package cannot dequantise")
        found[ours] = name

    hd, d, F = cfg["head_dim"], cfg["d_model"], cfg["ffn_dim"]
    tensors: list[TensorSpec] = []
    used: set[str] = set()
    for ours, shape in plan.items():
        if ours.endswith(".qkv"):
            parts = {ours + "#q": (cfg["n_heads"] * hd, d), ours + "#k": (cfg["n_kv_heads"] * hd, d),
                     ours + "#v": (cfg["n_kv_heads"] * hd, d)}
        elif ours.endswith(".gate_up"):
            parts = {ours + "#gate": (F, d), ours + "#up": (F, d)}
        elif ours == "embed":
            parts = {ours: None}  # may have extra (out-of-vocabulary) rows; checked below
        else:
            parts = {ours: shape}
        for p, want in parts.items():
            if p not in found:
                raise GGUFConvertError(f"{path}: missing tensor {_gguf_hint(p)!r} (needed for {p.split('#')[0]})")
            got = g.tensors[found[p]].shape
            if want is None:
                if len(got) != 2 or got[1] != d or got[0] < vocab:
                    raise GGUFConvertError(f"{path}: tensor 'token_embd.weight' has shape {list(got)} (ne "
                                           f"{list(reversed(got))}); expected [{vocab}, {d}] for {vocab} tokens")
            elif tuple(got) != tuple(want):
                raise GGUFConvertError(f"{path}: tensor {found[p]!r} has shape {list(got)} (ne "
                                       f"{list(reversed(got))}); the metadata implies {list(want)}")
            used.add(p)
        names = [found[p] for p in parts]
        is_norm = len(shape) == 1
        if is_norm:
            tdtype = "f32"
        elif ours == "embed":
            tdtype = embed_dtype or dtype
        else:
            tdtype = dtype
        types = [g.tensors[n].type_name for n in names]
        rows = vocab if ours == "embed" else None
        if is_norm:
            tensors.append(TensorSpec(name=ours, shape=shape, dtype=tdtype, note=f"{types[0]} -> f32",
                                      load=_loader(g, names, shape, norm=True, rows=None)))
        elif tdtype == SOURCE:
            # Each part at its own type's exact dtype; a fused tensor whose parts differ is stored
            # as row slices ours#0, ours#1, ... (one per run of parts with the same dtype).
            part_rows = [g.tensors[n].shape[0] if rows is None else rows for n in names]
            runs: list[tuple[str, bool, list[str], int]] = []
            for n, t, r in zip(names, types, part_rows):
                dt, exact = gguf_native.choose(t)
                if runs and runs[-1][0] == dt:
                    runs[-1][2].append(n)
                    runs[-1] = (dt, exact and runs[-1][1], runs[-1][2], runs[-1][3] + r)
                else:
                    runs.append((dt, exact, [n], r))
            for i, (dt, exact, run_names, nrows) in enumerate(runs):
                name = ours if len(runs) == 1 else f"{ours}#{i}"
                sub_shape = (nrows, shape[1])
                rtypes = "+".join(dict.fromkeys(g.tensors[n].type_name for n in run_names))
                note = f"{rtypes} -> {dt}" + (" (exact)" if exact else " (NOT exact: no .gcpp dtype holds these levels)")
                tensors.append(TensorSpec(
                    name=name, shape=sub_shape, dtype=dt, note=note,
                    load=_loader(g, run_names, sub_shape, norm=False, rows=rows),
                    raw=gguf_native.loader(g, run_names, dt, rows) if exact else None))
        else:
            exact = gguf_native.exact_into(types, tdtype)
            note = "+".join(dict.fromkeys(types)) + f" -> {tdtype}" + (" (exact)" if exact else " (re-quantised)")
            tensors.append(TensorSpec(name=ours, shape=shape, dtype=tdtype, note=note,
                                      load=_loader(g, names, shape, norm=False, rows=rows),
                                      raw=gguf_native.loader(g, names, tdtype, rows) if exact else None))
    extra = sorted(set(found) - used)
    if extra:
        raise GGUFConvertError(f"{path}: tensors not used by a {arch} model with this metadata: "
                               f"{', '.join(found[e] for e in extra)}")

    types = sorted({g.tensors[n].type_name for n in found.values()})
    scalars = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in g.metadata.items()
               if not isinstance(v, (list, np.ndarray)) and k != "tokenizer.chat_template"}
    return ModelSource(
        config=cfg,
        tokenizer_model=tok_bytes,
        special=special,
        chat_template=g.get("tokenizer.chat_template"),
        provenance={"source": os.path.abspath(path), "source_format": "gguf", "gguf_architecture": arch,
                    "gguf_name": g.get("general.name"), "gguf_tensor_types": types,
                    "converter": f"gemma_cpp {__version__}", "gguf_metadata": scalars, "hf_config": hf_cfg},
        tensors=tensors,
    )


def _opt(g: GGUFFile, name: str) -> int | None:
    v = g.get(f"tokenizer.ggml.{name}")
    return None if v is None else meta_int(v, f"{g.path}: tokenizer.ggml.{name}")


def _loader(g: GGUFFile, names: list[str], shape: tuple[int, ...], *, norm: bool,
            rows: int | None) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        arrays = [g.dequantize(n) for n in names]
        out = arrays[0] if len(arrays) == 1 else np.concatenate(arrays, axis=0)
        if rows is not None and out.shape[0] != rows:
            out = out[:rows]  # llama.cpp drops these too: rows past the tokenizer's vocabulary
        if norm:
            # llama.cpp stores Gemma's RMSNorm weights as 1 + w; our runtime applies 1 + w itself.
            out = out - np.float32(1.0)
        if tuple(out.shape) != tuple(shape):
            raise GGUFConvertError(f"{g.path}: tensor(s) {', '.join(names)} gave shape {list(out.shape)}, "
                                   f"expected {list(shape)}")
        return out
    return load


def _gguf_hint(ours: str) -> str:
    if ours == "embed":
        return "token_embd.weight"
    if ours == "final_norm":
        return "output_norm.weight"
    m = re.match(r"layers\.(\d+)\.(.+)", ours)
    if m:
        rev = {v: k for k, v in _NAMES.items()}
        return f"blk.{m.group(1)}.{rev.get(m.group(2), m.group(2))}.weight"
    return ours
