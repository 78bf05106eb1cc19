"""Hugging Face Gemma configs -> our normalised runtime config.

All per-family rules of transformers (models/gemma, gemma2, gemma3) are decoded here, once,
so the C++ runtime reads plain facts. Both the older config.json style (rope_theta,
rope_local_base_freq, rope_scaling) and transformers 5's rope_parameters are understood.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

SUPPORTED = ("gemma", "gemma2", "gemma3_text", "gemma3")


class ConfigError(ValueError):
    """A config.json we cannot run: names the field and what is wrong."""


def _req(cfg: dict[str, Any], key: str, where: str) -> Any:
    if key not in cfg or cfg[key] is None:
        raise ConfigError(f"{where}: required field '{key}' is missing")
    return cfg[key]


def text_config(hf: dict[str, Any], where: str = "config.json") -> tuple[str, dict[str, Any]]:
    """(model_type, the text model's config) — unwraps Gemma 3 multimodal configs."""
    model_type = hf.get("model_type")
    if model_type == "gemma3":
        tc = dict(hf.get("text_config") or {})
        tc.setdefault("model_type", "gemma3_text")
        return "gemma3_text", tc
    if model_type not in SUPPORTED:
        raise ConfigError(f"{where}: unsupported model_type {model_type!r} "
                          f"(supported: gemma, gemma2, gemma3_text, gemma3)")
    return model_type, hf


def _rope(tc: dict[str, Any], model_type: str) -> tuple[float, float, float]:
    """(global theta, local theta, global linear scale factor)."""
    params = tc.get("rope_parameters")
    if model_type == "gemma3_text":
        glob_theta = tc.get("rope_theta", 1_000_000.0)
        loc_theta = tc.get("rope_local_base_freq", 10_000.0)
        scaling = tc.get("rope_scaling")
        if isinstance(params, dict):
            full = params.get("full_attention")
            slide = params.get("sliding_attention")
            if isinstance(full, dict) or isinstance(slide, dict):
                full = full or {}
                slide = slide or {}
                glob_theta = full.get("rope_theta", glob_theta)
                loc_theta = slide.get("rope_theta", loc_theta)
                scaling = full if full.get("rope_type", "default") != "default" else scaling
                if slide.get("rope_type", "default") != "default":
                    raise ConfigError(f"rope_parameters.sliding_attention: rope_type "
                                      f"{slide.get('rope_type')!r} is not supported")
            else:  # a flat rope_parameters dict applies to global layers
                glob_theta = params.get("rope_theta", glob_theta)
                scaling = params if params.get("rope_type", "default") != "default" else scaling
        return float(glob_theta), float(loc_theta), _linear_factor(scaling)
    theta = tc.get("rope_theta", 10_000.0)
    scaling = tc.get("rope_scaling")
    if isinstance(params, dict):
        theta = params.get("rope_theta", theta)
        if params.get("rope_type", "default") != "default":
            scaling = params
    factor = _linear_factor(scaling)
    return float(theta), float(theta), factor


def _linear_factor(scaling: dict[str, Any] | None) -> float:
    if not scaling:
        return 1.0
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    if kind == "default":
        return 1.0
    if kind != "linear":
        raise ConfigError(f"rope scaling type {kind!r} is not supported (only 'linear')")
    return float(scaling["factor"])


def normalize(hf: dict[str, Any], where: str = "config.json") -> dict[str, Any]:
    model_type, tc = text_config(hf, where)
    n_layers = int(_req(tc, "num_hidden_layers", where))
    d = int(_req(tc, "hidden_size", where))
    n_heads = int(_req(tc, "num_attention_heads", where))
    n_kv = int(tc.get("num_key_value_heads") or n_heads)
    head_dim = int(tc.get("head_dim") or d // n_heads)
    family = {"gemma": 1, "gemma2": 2, "gemma3_text": 3}[model_type]

    # Activation: Gemma 1 reads hidden_act and maps the legacy "gelu" to the tanh form;
    # Gemma 2/3 read hidden_activation as written.
    if family == 1:
        act = tc.get("hidden_act") or tc.get("hidden_activation") or "gelu_pytorch_tanh"
        if act == "gelu":
            act = "gelu_pytorch_tanh"
    else:
        act = tc.get("hidden_activation") or "gelu_pytorch_tanh"
    if act in ("gelu_pytorch_tanh", "gelu_new", "gelu_fast", "gelu_python_tanh"):
        gelu_tanh = True
    elif act in ("gelu", "gelu_python"):
        gelu_tanh = False
    else:
        raise ConfigError(f"{where}: activation {act!r} is not supported")

    # Sliding layers.
    layer_types = tc.get("layer_types")
    if layer_types is not None:
        if len(layer_types) != n_layers:
            raise ConfigError(f"{where}: layer_types has {len(layer_types)} entries for "
                              f"{n_layers} layers")
        sliding = [1 if t == "sliding_attention" else 0 for t in layer_types]
        unknown = set(layer_types) - {"sliding_attention", "full_attention"}
        if unknown:
            raise ConfigError(f"{where}: unknown layer_types {sorted(unknown)}")
    elif family == 2:
        sliding = [1 if (i + 1) % 2 else 0 for i in range(n_layers)]
    elif family == 3:
        pattern = int(tc.get("sliding_window_pattern", 6))
        sliding = [1 if (i + 1) % pattern else 0 for i in range(n_layers)]
    else:
        sliding = [0] * n_layers
    window = tc.get("sliding_window") or 0
    if family == 1 or not any(sliding):
        window = 0
        sliding = [0] * n_layers
    if any(sliding) and int(window) <= 0:
        raise ConfigError(f"{where}: sliding layers need a positive sliding_window")

    if family == 1:
        query_scale = head_dim ** -0.5
    else:
        query_scale = float(tc.get("query_pre_attn_scalar", 256)) ** -0.5
    attn_cap = float(tc.get("attn_logit_softcapping") or 0.0) if family == 2 else 0.0
    final_cap = float(tc.get("final_logit_softcapping") or 0.0) if family >= 2 else 0.0
    theta_g, theta_l, scale_g = _rope(tc, model_type)
    if tc.get("tie_word_embeddings") is False:
        raise ConfigError(f"{where}: untied output embeddings are not supported (Gemma ties them)")
    if tc.get("attention_bias"):
        raise ConfigError(f"{where}: attention_bias=true is not supported (Gemma has no biases)")
    return {
        "family": family,
        "model_type": model_type,
        "n_layers": n_layers,
        "d_model": d,
        "n_heads": n_heads,
        "n_kv_heads": n_kv,
        "head_dim": head_dim,
        "ffn_dim": int(_req(tc, "intermediate_size", where)),
        "vocab_size": int(_req(tc, "vocab_size", where)),
        "max_position": int(tc.get("max_position_embeddings") or 8192),
        "rms_eps": float(tc.get("rms_norm_eps", 1e-6)),
        # transformers scales embeddings by sqrt(d) in the activation dtype (float32 here).
        "embed_scale": float(np.float32(math.sqrt(d))),
        "query_scale": float(query_scale),
        "attn_softcap": attn_cap,
        "final_softcap": final_cap,
        "gelu_tanh": gelu_tanh,
        "qk_norm": family == 3,
        "sandwich_norms": family >= 2,
        "sliding_window": int(window),
        "layer_sliding": sliding,
        "rope_theta_global": theta_g,
        "rope_theta_local": theta_l,
        "rope_scale_global": scale_g,
    }


def tensor_plan(cfg: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """Every tensor a model of this config has, with its shape (our names)."""
    d, hd, F = cfg["d_model"], cfg["head_dim"], cfg["ffn_dim"]
    qkv_rows = (cfg["n_heads"] + 2 * cfg["n_kv_heads"]) * hd
    plan: dict[str, tuple[int, ...]] = {"embed": (cfg["vocab_size"], d), "final_norm": (d,)}
    for i in range(cfg["n_layers"]):
        p = f"layers.{i}."
        plan[p + "attn_norm"] = (d,)
        plan[p + "qkv"] = (qkv_rows, d)
        plan[p + "o"] = (d, cfg["n_heads"] * hd)
        plan[p + "ffn_norm"] = (d,)
        plan[p + "gate_up"] = (2 * F, d)
        plan[p + "down"] = (d, F)
        if cfg["sandwich_norms"]:
            plan[p + "post_attn_norm"] = (d,)
            plan[p + "post_ffn_norm"] = (d,)
        if cfg["qk_norm"]:
            plan[p + "q_norm"] = (hd,)
            plan[p + "k_norm"] = (hd,)
    return plan
