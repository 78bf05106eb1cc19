"""Reader for Hugging Face Gemma checkpoint directories (config.json, safetensors, tokenizer).

Maps transformers' tensor names onto ours and fuses q/k/v and gate/up at conversion time,
so the runtime does one matmul for each (see csrc/model/weights.h for our names).
"""

from __future__ import annotations

import json
import os
import re
from typing import Any, Callable

import numpy as np

from .. import __version__
from ..gcpp_format import ModelSource, TensorSpec
from . import config as cfgmod
from ._defaults import DEFAULT_DTYPE, SOURCE
from .safetensors_reader import SafetensorsError, SafetensorsFile
from .tokenizer_meta import special_ids_from_sentencepiece

# Prefixes under which the text model's tensors appear (Gemma 3 multimodal checkpoints nest it).
_PREFIXES = ("model.language_model.", "language_model.model.", "model.")
# Tensors of other modalities that a text-only runtime ignores.
_IGNORED = re.compile(r"^(vision_tower|multi_modal_projector|model\.vision_tower|"
                      r"model\.multi_modal_projector)\.")


class CheckpointError(ValueError):
    """A checkpoint directory we cannot convert: names the file/tensor and the problem."""


def _load_json(path: str) -> dict[str, Any] | None:
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        try:
            return json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CheckpointError(f"{path}: invalid JSON ({e})") from None
        except RecursionError:
            raise CheckpointError(f"{path}: JSON nested too deeply") from None


def _shards(src: str) -> list[str]:
    index = _load_json(os.path.join(src, "model.safetensors.index.json"))
    if index is not None:
        wm = index.get("weight_map") if isinstance(index, dict) else None
        if not isinstance(wm, dict) or not all(isinstance(f, str) for f in wm.values()):
            raise CheckpointError(f"{src}/model.safetensors.index.json: 'weight_map' must map tensor names "
                                  f"to shard file names")
        files = sorted(set(wm.values()))
        bad = [f for f in files if os.path.basename(f) != f or f in ("", ".", "..")]
        if bad:  # shards live in the checkpoint directory: no paths elsewhere
            raise CheckpointError(f"{src}/model.safetensors.index.json: shard names must be plain file names, "
                                  f"got {bad[0]!r}")
        if not files:
            raise CheckpointError(f"{src}/model.safetensors.index.json: empty weight_map")
        missing = [f for f in files if not os.path.exists(os.path.join(src, f))]
        if missing:
            raise CheckpointError(f"{src}: shard(s) named in model.safetensors.index.json are missing: "
                                  f"{', '.join(missing)}")
        return [os.path.join(src, f) for f in files]
    single = os.path.join(src, "model.safetensors")
    if os.path.exists(single):
        return [single]
    found = sorted(f for f in os.listdir(src) if f.endswith(".safetensors"))
    if found:
        return [os.path.join(src, f) for f in found]
    raise CheckpointError(f"{src}: no model.safetensors or sharded model-*.safetensors files found")


def _our_name(hf_name: str, family: int) -> str | None:
    """transformers tensor name -> (our name, part) or None if not part of the text model."""
    name = hf_name
    for p in _PREFIXES:
        if name.startswith(p):
            name = name[len(p):]
            break
    if name == "embed_tokens.weight":
        return "embed"
    if name == "norm.weight":
        return "final_norm"
    m = re.match(r"^layers\.(\d+)\.(.+)\.weight$", name)
    if not m:
        return None
    i, rest = m.group(1), m.group(2)
    post_attn = "ffn_norm" if family == 1 else "post_attn_norm"
    table = {
        "input_layernorm": "attn_norm",
        "post_attention_layernorm": post_attn,
        "pre_feedforward_layernorm": "ffn_norm",
        "post_feedforward_layernorm": "post_ffn_norm",
        "self_attn.q_proj": "qkv#q",
        "self_attn.k_proj": "qkv#k",
        "self_attn.v_proj": "qkv#v",
        "self_attn.o_proj": "o",
        "self_attn.q_norm": "q_norm",
        "self_attn.k_norm": "k_norm",
        "mlp.gate_proj": "gate_up#gate",
        "mlp.up_proj": "gate_up#up",
        "mlp.down_proj": "down",
    }
    ours = table.get(rest)
    return None if ours is None else f"layers.{i}.{ours}"


def read_tokenizer(src: str) -> bytes:
    path = os.path.join(src, "tokenizer.model")
    if not os.path.exists(path):
        raise CheckpointError(f"{src}: tokenizer.model (SentencePiece) is missing; it ships with "
                              f"every Gemma checkpoint on Hugging Face")
    with open(path, "rb") as f:
        return f.read()


def read_hf(src: str, *, dtype: str = DEFAULT_DTYPE, embed_dtype: str | None = None) -> ModelSource:
    """Describe the checkpoint in `src` as a ModelSource (tensors are loaded lazily)."""
    if not os.path.isdir(src):
        raise CheckpointError(f"{src}: not a directory (expected a Hugging Face checkpoint)")
    cfg_path = os.path.join(src, "config.json")
    hf_cfg = _load_json(cfg_path)
    if hf_cfg is None:
        raise CheckpointError(f"{src}: config.json is missing")
    try:
        cfg = cfgmod.normalize(hf_cfg, cfg_path)
    except cfgmod.ConfigError as e:
        raise CheckpointError(str(e)) from None
    family = cfg["family"]
    plan = cfgmod.tensor_plan(cfg)

    # Locate every tensor we need across the shards.
    found: dict[str, tuple[SafetensorsFile, str]] = {}
    for shard in _shards(src):
        try:
            st = SafetensorsFile(shard)
        except SafetensorsError as e:
            raise CheckpointError(str(e)) from None
        for hf_name in st.keys():
            if _IGNORED.match(hf_name) or hf_name == "lm_head.weight":
                continue
            ours = _our_name(hf_name, family)
            if ours is None:
                raise CheckpointError(f"{shard}: unexpected tensor {hf_name!r} for a "
                                      f"{cfg['model_type']} model")
            if ours in found:
                raise CheckpointError(f"{shard}: tensor {hf_name!r} appears twice")
            found[ours] = (st, hf_name)

    def part(name: str) -> tuple[SafetensorsFile, str]:
        if name not in found:
            raise CheckpointError(f"{src}: missing tensor for {name!r} "
                                  f"(transformers name {_hf_hint(name, family)})")
        return found[name]

    def loader(parts: list[str], shape: tuple[int, ...]) -> Callable[[], np.ndarray]:
        def load() -> np.ndarray:
            arrays = []
            for pn in parts:
                st, hf_name = part(pn)
                try:
                    arrays.append(np.asarray(st.get(hf_name), dtype=np.float32))
                except SafetensorsError as e:
                    raise CheckpointError(str(e)) from None
            out = arrays[0] if len(arrays) == 1 else np.concatenate(arrays, axis=0)
            if tuple(out.shape) != shape:
                names = ", ".join(part(p)[1] for p in parts)
                raise CheckpointError(f"{src}: tensor {names} has shape {list(out.shape)}, "
                                      f"config.json implies {list(shape)}")
            return out
        return load

    hd = cfg["head_dim"]
    tensors = []
    used = set()
    for name, shape in plan.items():
        if name.endswith(".qkv"):
            parts = [name + "#q", name + "#k", name + "#v"]
            expect = {"#q": cfg["n_heads"] * hd, "#k": cfg["n_kv_heads"] * hd, "#v": cfg["n_kv_heads"] * hd}
        elif name.endswith(".gate_up"):
            parts = [name + "#gate", name + "#up"]
            expect = {"#gate": cfg["ffn_dim"], "#up": cfg["ffn_dim"]}
        else:
            parts, expect = [name], {}
        for p in parts:  # check shapes now, before anything is written
            st, hf_name = part(p)
            sub = p[p.index("#"):] if "#" in p else None
            want = (expect[sub], shape[1]) if sub else shape
            if st.shape(hf_name) != want:
                raise CheckpointError(f"{st.path}: tensor {hf_name!r} has shape "
                                      f"{list(st.shape(hf_name))}, config.json implies {list(want)}")
            used.add(p)
        if len(shape) == 1:
            tdtype = "f32"  # norms stay float32
        elif name == "embed":
            tdtype = embed_dtype or dtype
        else:
            tdtype = dtype
        note = ""
        if tdtype == SOURCE:  # the checkpoint's own float type (the widest, if parts differ)
            kinds = {part(p)[0].entries[part(p)[1]]["dtype"] for p in parts}
            tdtype = "bf16" if kinds == {"BF16"} else "f16" if kinds == {"F16"} else "f32"
            note = f"{'+'.join(sorted(kinds))} -> {tdtype} (exact)"
        tensors.append(TensorSpec(name=name, shape=shape, dtype=tdtype, load=loader(parts, shape), note=note))
    extra = sorted(set(found) - used)
    if extra:
        raise CheckpointError(f"{src}: tensors not used by a {cfg['model_type']} model of this config: "
                              f"{', '.join(found[e][1] for e in extra)}")

    tok_bytes = read_tokenizer(src)
    gen_cfg = _load_json(os.path.join(src, "generation_config.json")) or {}
    tok_cfg = _load_json(os.path.join(src, "tokenizer_config.json")) or {}
    if not isinstance(gen_cfg, dict) or not isinstance(tok_cfg, dict):
        raise CheckpointError(f"{src}: generation_config.json and tokenizer_config.json must hold JSON objects")
    try:
        special = special_ids_from_sentencepiece(tok_bytes)
    except RuntimeError as e:  # sentencepiece's parse error
        raise CheckpointError(f"{src}/tokenizer.model: not a valid SentencePiece model "
                              f"({str(e).strip()})") from None
    eos = set(special["eos"])
    for where, source in (("config.json", hf_cfg), ("config.json", hf_cfg.get("text_config") or {}),
                          ("generation_config.json", gen_cfg)):
        v = source.get("eos_token_id") if isinstance(source, dict) else None
        ids = [v] if isinstance(v, int) else v if isinstance(v, list) else []
        if not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in ids):
            raise CheckpointError(f"{src}/{where}: eos_token_id must be a token id or a list of them, got {v!r}")
        eos.update(ids)
    special["eos"] = sorted(eos)
    chat_template = tok_cfg.get("chat_template")
    if chat_template is None:
        jinja = os.path.join(src, "chat_template.jinja")
        if os.path.exists(jinja):
            with open(jinja, encoding="utf-8") as f:
                chat_template = f.read()
        else:
            cj = _load_json(os.path.join(src, "chat_template.json")) or {}
            chat_template = cj.get("chat_template") if isinstance(cj, dict) else None
    if isinstance(chat_template, list):  # named templates: take the default one
        chat_template = next((t.get("template") for t in chat_template
                              if isinstance(t, dict) and t.get("name") == "default"), None)
    if chat_template is not None and not isinstance(chat_template, str):
        raise CheckpointError(f"{src}: the chat template must be a string, got {type(chat_template).__name__}")
    return ModelSource(
        config=cfg,
        tokenizer_model=tok_bytes,
        special=special,
        chat_template=chat_template,
        provenance={"source": os.path.abspath(src), "source_format": "huggingface",
                    "architectures": hf_cfg.get("architectures"), "converter": f"gemma_cpp {__version__}",
                    "hf_config": hf_cfg},
        tensors=tensors,
    )


def _hf_hint(ours: str, family: int) -> str:
    rev = {
        "attn_norm": "input_layernorm", "post_attn_norm": "post_attention_layernorm",
        "ffn_norm": "post_attention_layernorm" if family == 1 else "pre_feedforward_layernorm",
        "post_ffn_norm": "post_feedforward_layernorm", "qkv#q": "self_attn.q_proj",
        "qkv#k": "self_attn.k_proj", "qkv#v": "self_attn.v_proj", "o": "self_attn.o_proj",
        "q_norm": "self_attn.q_norm", "k_norm": "self_attn.k_norm", "gate_up#gate": "mlp.gate_proj",
        "gate_up#up": "mlp.up_proj", "down": "mlp.down_proj",
    }
    if ours == "embed":
        return "'model.embed_tokens.weight'"
    if ours == "final_norm":
        return "'model.norm.weight'"
    m = re.match(r"layers\.(\d+)\.(.+)", ours)
    if m:
        return f"'model.layers.{m.group(1)}.{rev.get(m.group(2), m.group(2))}.weight'"
    return repr(ours)
