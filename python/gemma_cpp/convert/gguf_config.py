"""The model config of a Gemma GGUF file, rebuilt from its metadata with the rules llama.cpp applies
when it loads such a file (src/llama-model.cpp): see gguf_reader.py's docstring for the facts
llama.cpp hard-codes rather than stores (sliding-window patterns, rope bases, the 27B query scale)."""

from __future__ import annotations

from typing import Any

import numpy as np

from . import config as cfgmod
from .gguf_file import GGUFFile

ARCHS = {"gemma": "gemma", "gemma2": "gemma2", "gemma3": "gemma3_text"}


class GGUFConvertError(ValueError):
    """A GGUF file we cannot convert: names the file, key or tensor and the problem."""


def meta_int(x: Any, what: str = "metadata value") -> int:
    """An integer metadata value; anything else (a string, a float, an array) is a GGUFConvertError."""
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, bool) or not isinstance(x, int):
        raise GGUFConvertError(f"{what} must be an integer, got {x!r}")
    return x


def meta_float(x: Any, what: str) -> float:
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise GGUFConvertError(f"{what} must be a number, got {x!r}")
    return float(x)


def hf_config_from_gguf(g: GGUFFile, vocab_size: int) -> dict[str, Any]:
    """A transformers-style config dict for the model in `g` (fed to config.normalize)."""
    arch = g.require("general.architecture")
    if arch not in ARCHS:
        raise GGUFConvertError(f"{g.path}: GGUF architecture {arch!r} is not supported "
                               f"(supported: {', '.join(ARCHS)})")

    def key(name: str, default: Any = None, required: bool = False) -> Any:
        full = f"{arch}.{name}"
        if full in g.metadata:
            return g.metadata[full]
        if required:
            raise GGUFConvertError(f"{g.path}: required metadata key {full!r} is missing")
        return default

    def size(name: str, ours: str, value: Any) -> int:  # checked before any arithmetic uses it
        return cfgmod.check_size(meta_int(value, f"{g.path}: {arch}.{name}"), f"{arch}.{name}", ours, g.path)

    def uniform(name: str, value: Any) -> Any:
        if isinstance(value, (list, np.ndarray)):  # per-layer values: must all be equal for Gemma
            if len(value) == 0 or len(set(meta_int(x, f"{g.path}: {arch}.{name}") for x in value)) != 1:
                raise GGUFConvertError(f"{g.path}: {arch}.{name} varies per layer ({list(value)[:8]}); "
                                       f"not a Gemma layout")
            return value[0]
        return value

    n_layers = size("block_count", "n_layers", key("block_count", required=True))
    d = size("embedding_length", "d_model", key("embedding_length", required=True))
    n_heads = size("attention.head_count", "n_heads", uniform("attention.head_count",
                                                               key("attention.head_count", required=True)))
    n_kv = size("attention.head_count_kv", "n_kv_heads",
                uniform("attention.head_count_kv", key("attention.head_count_kv", n_heads)))
    head_dim = size("attention.key_length", "head_dim", key("attention.key_length", d // n_heads or 1))
    v_dim = meta_int(key("attention.value_length", head_dim), f"{g.path}: {arch}.attention.value_length")
    if v_dim != head_dim:
        raise GGUFConvertError(f"{g.path}: {arch}.attention.value_length={v_dim} differs from key_length="
                               f"{head_dim}; Gemma has equal key and value head sizes")
    ffn = uniform("feed_forward_length", key("feed_forward_length", required=True))
    hf: dict[str, Any] = {
        "model_type": ARCHS[arch],
        "num_hidden_layers": n_layers,
        "hidden_size": d,
        "num_attention_heads": n_heads,
        "num_key_value_heads": n_kv,
        "head_dim": head_dim,
        "intermediate_size": meta_int(ffn, f"{g.path}: {arch}.feed_forward_length"),
        "vocab_size": vocab_size,
        "max_position_embeddings": meta_int(key("context_length", 8192), f"{g.path}: {arch}.context_length"),
        "rms_norm_eps": meta_float(key("attention.layer_norm_rms_epsilon", 1e-6),
                               f"{g.path}: {arch}.attention.layer_norm_rms_epsilon"),
        "tie_word_embeddings": True,
    }
    if arch == "gemma":
        hf["hidden_act"] = "gelu_pytorch_tanh"
    else:
        hf["hidden_activation"] = "gelu_pytorch_tanh"

    # Query scale: llama.cpp uses head_dim^-0.5, except (d/heads)^-0.5 for the 27B models,
    # matching their query_pre_attn_scalar (144 = 4608/32 for Gemma 2 27B, 168 = 5376/32 for Gemma 3 27B).
    scale = key("attention.scale")
    if scale is not None:
        scale = meta_float(scale, f"{g.path}: {arch}.attention.scale")
    if arch != "gemma":
        if scale is not None and scale > 0:
            hf["query_pre_attn_scalar"] = scale ** -2
        else:
            is_27b = (arch == "gemma2" and n_layers == 46) or (arch == "gemma3" and n_layers == 62)
            hf["query_pre_attn_scalar"] = d // n_heads if is_27b else head_dim
    elif scale is not None and abs(scale - head_dim ** -0.5) > 1e-6 * head_dim ** -0.5:
        raise GGUFConvertError(f"{g.path}: gemma.attention.scale={scale} differs from head_dim^-0.5; "
                               f"Gemma 1 has no query scale override")

    def sliding_layers(default_period: int) -> list[str]:
        pat = key("attention.sliding_window_pattern")
        if pat is None:
            period = default_period
        elif isinstance(pat, (list, np.ndarray)):
            flags = [bool(x) for x in pat]
            if len(flags) != n_layers:
                raise GGUFConvertError(f"{g.path}: {arch}.attention.sliding_window_pattern has {len(flags)} "
                                       f"entries for {n_layers} layers")
            return ["sliding_attention" if f else "full_attention" for f in flags]
        else:
            period = meta_int(pat, f"{g.path}: {arch}.attention.sliding_window_pattern")
        if period <= 0:
            raise GGUFConvertError(f"{g.path}: {arch}.attention.sliding_window_pattern={period} is invalid")
        # llama.cpp's set_swa_pattern(n): layer il slides iff il % n < n - 1.
        return ["sliding_attention" if i % period < period - 1 else "full_attention" for i in range(n_layers)]

    theta = meta_float(key("rope.freq_base", 10000.0), f"{g.path}: {arch}.rope.freq_base")
    if arch == "gemma":
        hf["rope_theta"] = theta
    elif arch == "gemma2":
        hf["rope_theta"] = theta
        hf["sliding_window"] = meta_int(key("attention.sliding_window", 4096), f"{g.path}: {arch}.attention.sliding_window")
        hf["layer_types"] = sliding_layers(2)
        # llama.cpp's defaults (llama-hparams.h) when the keys are absent.
        hf["attn_logit_softcapping"] = meta_float(key("attn_logit_softcapping", 50.0), f"{g.path}: {arch}.attn_logit_softcapping")
        hf["final_logit_softcapping"] = meta_float(key("final_logit_softcapping", 30.0), f"{g.path}: {arch}.final_logit_softcapping")
    else:
        hf["rope_theta"] = theta
        hf["rope_local_base_freq"] = meta_float(key("rope.freq_base_swa", 10000.0), f"{g.path}: {arch}.rope.freq_base_swa")
        hf["sliding_window"] = meta_int(key("attention.sliding_window", required=True), f"{g.path}: {arch}.attention.sliding_window")
        hf["layer_types"] = sliding_layers(6)
        final_cap = key("final_logit_softcapping")
        if final_cap:
            hf["final_logit_softcapping"] = meta_float(final_cap, f"{g.path}: {arch}.final_logit_softcapping")
    scaling = key("rope.scaling.type")
    factor = key("rope.scaling.factor")
    if factor is not None:
        factor = meta_float(factor, f"{g.path}: {arch}.rope.scaling.factor")
    if scaling not in (None, "none") or (factor is not None and factor not in (0.0, 1.0)):
        if scaling not in (None, "linear"):
            raise GGUFConvertError(f"{g.path}: {arch}.rope.scaling.type={scaling!r} is not supported "
                                   f"(only linear)")
        if arch != "gemma3":
            raise GGUFConvertError(f"{g.path}: rope scaling on a {arch} model is not supported")
        if factor is None:
            raise GGUFConvertError(f"{g.path}: {arch}.rope.scaling.type=linear without rope.scaling.factor")
        hf["rope_scaling"] = {"rope_type": "linear", "factor": factor}
    return hf
