"""`gemma-cpp info [MODEL]`: what a model file holds (config, weight types, size, tokenizer,
provenance, KV bytes per token) and the instruction set the kernels use here."""

from __future__ import annotations

import json
import math
from typing import Any

from ..params import KV_DTYPES
from .models import default_model, resolve_model
from .options import add_model


def add_parser(sub) -> None:
    p = sub.add_parser("info", help="what a model file holds",
                       description="Show a model file's config, weight types, size, tokenizer, provenance "
                                   "and the instruction set the kernels use here.")
    add_model(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=main)


def model_info(model) -> dict[str, Any]:
    from .. import system_info

    meta = model.metadata
    h = model._header
    tensors = meta["tensors"]
    dtypes: dict[str, dict[str, int]] = {}
    for t in tensors:
        d = dtypes.setdefault(t["dtype"], {"tensors": 0, "bytes": 0, "params": 0})
        d["tensors"] += 1
        d["bytes"] += int(t["nbytes"])
        d["params"] += math.prod(t["shape"])
    tok = model.tokenizer
    special = {}
    for k, v in meta["special"].items():
        if isinstance(v, list):
            special[k] = [{"id": i, "piece": tok.id_to_piece(i)} for i in v]
        elif isinstance(v, int) and 0 <= v < tok.vocab_size:
            special[k] = {"id": v, "piece": tok.id_to_piece(v)}
        else:
            special[k] = v
    cfg = model.config
    return {
        "file": model.path,
        "file_size": h.file_size,
        "format_version": h.version,
        "tensor_count": len(tensors),
        "parameters": sum(d["params"] for d in dtypes.values()),
        "config": {k: getattr(cfg, k) for k in ("model_type", "family", "n_layers", "d_model", "n_heads",
                                               "n_kv_heads", "head_dim", "ffn_dim", "vocab_size", "max_position",
                                               "sliding_window")},
        "weight_dtypes": dtypes,
        "kv_cache_bytes_per_token": {kd: model.kv_bytes_per_token_of(kd) for kd in KV_DTYPES},
        "tokenizer": {"kind": meta["tokenizer"].get("kind", "sentencepiece"), "vocab_size": tok.vocab_size,
                      "special": special,
                      "chat_template": "from the checkpoint" if meta.get("chat_template") else
                      "built-in Gemma template"},
        "variant": model.variant,
        "provenance": {k: v for k, v in meta.get("provenance", {}).items() if k not in ("hf_config", "variant")},
        "runtime": system_info(),
    }


def main(args, parser) -> int:
    from ..model import Model

    model = Model(resolve_model(args.model or default_model()))
    info = model_info(model)
    if not args.model:
        info["default_model"] = True
    if args.json:
        print(json.dumps(info, indent=2, ensure_ascii=False))
        return 0
    c = info["config"]
    p = []
    p.append(f"file:          {info['file']}")
    if info.get("default_model"):
        p.append("               the default model: Gemma 3 270M from the [demo] extra (llama.cpp's Q4_K_M GGUF, "
                 "converted once to this file)")
    v = info["variant"]
    what = {"base": "base (pretrained): continues text; not trained to chat",
            "instruction-tuned": "instruction-tuned: made for chat"}.get(v["kind"], "unknown (base or "
                                                                          "instruction-tuned)")
    p.append(f"variant:       {what} [{v['evidence']}]")
    p.append(f"size:          {info['file_size'] / 2**20:.1f} MiB, format v{info['format_version']}, "
             f"{info['tensor_count']} tensors, {info['parameters'] / 1e6:.1f} M parameters")
    p.append(f"model:         {c['model_type']} (Gemma {c['family']}), {c['n_layers']} layers, d_model {c['d_model']}, "
             f"heads {c['n_heads']} (kv {c['n_kv_heads']}) x {c['head_dim']}, ffn {c['ffn_dim']}")
    p.append(f"context:       {c['max_position']} tokens" +
             (f", sliding window {c['sliding_window']}" if c["sliding_window"] else ""))
    p.append("weights:       " + ", ".join(f"{k}: {v['tensors']} tensors, {v['bytes'] / 2**20:.1f} MiB"
                                           for k, v in sorted(info["weight_dtypes"].items())))
    p.append("KV cache:      " + ", ".join(f"{k} {v / 1024:.1f} KiB" for k, v in info["kv_cache_bytes_per_token"].items())
             + " per token of context (--kv-dtype)")
    t = info["tokenizer"]
    sp = []
    for k, v in t["special"].items():
        if isinstance(v, list):
            sp.append(f"{k}=[" + ", ".join(f"{x['id']} {x['piece']}" for x in v) + "]")
        elif isinstance(v, dict):
            sp.append(f"{k}={v['id']} {v['piece']}")
    p.append(f"tokenizer:     {t['kind']}, {t['vocab_size']} pieces; chat template: {t['chat_template']}")
    p.append(f"special ids:   {'; '.join(sp)}")
    pv = info["provenance"]
    first = True
    for k, v in pv.items():  # one line each; bulky values are summarised (--json has them whole)
        if isinstance(v, dict):
            v = f"{len(v)} keys (see --json)"
        elif isinstance(v, list):
            v = ", ".join(map(str, v))
        p.append(f"{'provenance:' if first else '':<15}{k}: {v}")
        first = False
    r = info["runtime"]
    p.append(f"runtime:       gemma_cpp {r['version']}, ISA {r['isa']} (available: "
             f"{', '.join(r['available_isas'])}), {r['threads']} threads")
    print("\n".join(p))
    return 0
