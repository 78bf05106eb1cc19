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


def check_size(value: Any, key: str, ours: str, where: str) -> int:
    """A size field (`key` in the source, `ours` in the runtime config) as an int in
    [1, the runtime's bound] (`_core.CONFIG_LIMITS`, from csrc/model/config.h): checked before any
    arithmetic or per-layer table uses it (a zero divides, 2^32 layers exhaust memory)."""
    from .. import _core

    if isinstance(value, np.integer):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{where}: field '{key}' must be an integer, got {value!r}")
    hi = _core.CONFIG_LIMITS[ours]
    if not 1 <= value <= hi:
        raise ConfigError(f"{where}: field '{key}' must be in [1, {hi}], got {value}")
    return value


def _num(value: Any, key: str, where: str) -> float:
    """A real-valued field as float (NaN, Inf and ranges are checked by _core.check_config)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{where}: field '{key}' must be a number, got {value!r}")
    try:
        return float(value)
    except OverflowError:
        raise ConfigError(f"{where}: field '{key}' is out of range: {value!r}") from None


def _positive(value: Any, key: str, where: str) -> float:
    v = _num(value, key, where)
    if not (v > 0 and math.isfinite(v)):
        raise ConfigError(f"{where}: field '{key}' must be a finite number > 0, got {value!r}")
    return v


def _req(cfg: dict[str, Any], key: str, where: str) -> Any:
    if key not in cfg or cfg[key] is None:
        raise ConfigError(f"{where}: required field '{key}' is missing")
    return cfg[key]


def text_config(hf: dict[str, Any], where: str = "config.json") -> tuple[str, dict[str, Any]]:
    """(model_type, the text model's config) — unwraps Gemma 3 multimodal configs."""
    if not isinstance(hf, dict):
        raise ConfigError(f"{where}: must be a JSON object, got {type(hf).__name__}")
    model_type = hf.get("model_type")
    if model_type == "gemma3":
        tc = hf.get("text_config") or {}
        if not isinstance(tc, dict):
            raise ConfigError(f"{where}: field 'text_config' must be an object, got {type(tc).__name__}")
        tc = dict(tc)
        tc.setdefault("model_type", "gemma3_text")
        return "gemma3_text", tc
    if model_type not in SUPPORTED:
        raise ConfigError(f"{where}: unsupported model_type {model_type!r} "
                          f"(supported: gemma, gemma2, gemma3_text, gemma3)")
    return model_type, hf


def _rope(tc: dict[str, Any], model_type: str, where: str) -> tuple[float, float, float]:
    """(global theta, local theta, global linear scale factor)."""
    params = tc.get("rope_parameters")
    for key in ("rope_parameters", "rope_scaling"):
        v = tc.get(key)
        if v is not None and not isinstance(v, dict):
            raise ConfigError(f"{where}: field '{key}' must be an object, got {type(v).__name__}")
        for sub in ("full_attention", "sliding_attention"):
            if isinstance(v, dict) and v.get(sub) is not None and not isinstance(v[sub], dict):
                raise ConfigError(f"{where}: field '{key}.{sub}' must be an object")
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
        return (_num(glob_theta, "rope_theta", where), _num(loc_theta, "rope_local_base_freq", where),
                _linear_factor(scaling, where))
    theta = tc.get("rope_theta", 10_000.0)
    scaling = tc.get("rope_scaling")
    if isinstance(params, dict):
        theta = params.get("rope_theta", theta)
        if params.get("rope_type", "default") != "default":
            scaling = params
    factor = _linear_factor(scaling, where)
    return _num(theta, "rope_theta", where), _num(theta, "rope_theta", where), factor


def _linear_factor(scaling: dict[str, Any] | None, where: str) -> float:
    if not scaling:
        return 1.0
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    if kind == "default":
        return 1.0
    if kind != "linear":
        raise ConfigError(f"rope scaling type {kind!r} is not supported (only 'linear')")
    if "factor" not in scaling:
        raise ConfigError(f"{where}: linear rope scaling without a 'factor'")
    return _num(scaling["factor"], "rope_scaling.factor", where)


def normalize(hf: dict[str, Any], where: str = "config.json") -> dict[str, Any]:
    """The runtime config for a transformers config dict; ConfigError naming the field for anything
    that would not load (every value is finally checked by the runtime's own rules,
    `_core.check_config`, so the converter never writes a file the loader refuses)."""
    model_type, tc = text_config(hf, where)
    n_layers = check_size(_req(tc, "num_hidden_layers", where), "num_hidden_layers", "n_layers", where)
    d = check_size(_req(tc, "hidden_size", where), "hidden_size", "d_model", where)
    n_heads = check_size(_req(tc, "num_attention_heads", where), "num_attention_heads", "n_heads", where)
    n_kv = check_size(tc.get("num_key_value_heads") or n_heads, "num_key_value_heads", "n_kv_heads", where)
    head_dim = check_size(tc.get("head_dim") or d // n_heads or 1, "head_dim", "head_dim", where)
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
        if not isinstance(layer_types, list) or not all(isinstance(t, str) for t in layer_types):
            raise ConfigError(f"{where}: layer_types must be a list of strings")
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
        pattern = tc.get("sliding_window_pattern", 6)
        if isinstance(pattern, bool) or not isinstance(pattern, int) or pattern < 1:
            raise ConfigError(f"{where}: sliding_window_pattern must be an integer >= 1, got {pattern!r}")
        sliding = [1 if (i + 1) % pattern else 0 for i in range(n_layers)]
    else:
        sliding = [0] * n_layers
    window = tc.get("sliding_window") or 0
    if family == 1 or not any(sliding):
        window = 0
        sliding = [0] * n_layers
    if any(sliding):
        if not window:
            raise ConfigError(f"{where}: sliding layers need a positive sliding_window")
        window = check_size(window, "sliding_window", "sliding_window", where)

    if family == 1:
        query_scale = head_dim ** -0.5
    else:
        query_scale = _positive(tc.get("query_pre_attn_scalar", 256), "query_pre_attn_scalar", where) ** -0.5
    attn_cap = _num(tc.get("attn_logit_softcapping") or 0.0, "attn_logit_softcapping", where) if family == 2 else 0.0
    final_cap = _num(tc.get("final_logit_softcapping") or 0.0, "final_logit_softcapping", where) if family >= 2 else 0.0
    theta_g, theta_l, scale_g = _rope(tc, model_type, where)
    if tc.get("tie_word_embeddings") is False:
        raise ConfigError(f"{where}: untied output embeddings are not supported (Gemma ties them)")
    if tc.get("attention_bias"):
        raise ConfigError(f"{where}: attention_bias=true is not supported (Gemma has no biases)")
    out = {
        "family": family,
        "model_type": model_type,
        "n_layers": n_layers,
        "d_model": d,
        "n_heads": n_heads,
        "n_kv_heads": n_kv,
        "head_dim": head_dim,
        "ffn_dim": check_size(_req(tc, "intermediate_size", where), "intermediate_size", "ffn_dim", where),
        "vocab_size": check_size(_req(tc, "vocab_size", where), "vocab_size", "vocab_size", where),
        "max_position": check_size(8192 if tc.get("max_position_embeddings") is None else tc["max_position_embeddings"],
                                   "max_position_embeddings", "max_position", where),
        "rms_eps": _num(tc.get("rms_norm_eps", 1e-6), "rms_norm_eps", where),
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
    from .. import _core

    try:
        _core.check_config(out)
    except ValueError as e:  # "config field 'rms_eps': must be ..." in the runtime's names
        raise ConfigError(f"{where}: {e} (the normalised config would not load)") from None
    return out


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
