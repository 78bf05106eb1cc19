"""Is a checkpoint a base (pretrained) model or an instruction-tuned one?

Base models continue text; asked to chat they loop ("Hi! mendatanguser ..."), which looks like
an engine bug. So the converter records what it can tell from the source in the file's
provenance (`variant: {kind, evidence}`), and chat entry points warn once on a base model.
Files converted before this existed are judged at load time from the same provenance.

Evidence, strongest first: a fine-tune tag (GGUF `general.finetune`; "it"/"pt" in the GGUF
`general.name`, the checkpoint directory's or `_name_or_path`'s name, as Google names them:
gemma-3-270m-it, gemma-2b-pt), then the absence of any chat template (llama.cpp writes
`tokenizer.chat_template` only for chat models). A name without a tag and with a template is
"unknown": no warning.
"""

from __future__ import annotations

import os
import re
from typing import Any

BASE = "base"
INSTRUCT = "instruction-tuned"
UNKNOWN = "unknown"

_IT = re.compile(r"(?:^|[-_ .])(it|instruct|chat)(?:$|[-_ .])", re.IGNORECASE)
_PT = re.compile(r"(?:^|[-_ .])(pt|base|pretrained)(?:$|[-_ .])", re.IGNORECASE)


def _from_names(names: list[tuple[str, str]]) -> dict[str, str] | None:
    for where, name in names:
        if not isinstance(name, str) or not name:
            continue
        if _IT.search(name):
            return {"kind": INSTRUCT, "evidence": f"{where} {name!r}"}
        if _PT.search(name):
            return {"kind": BASE, "evidence": f"{where} {name!r}"}
    return None


def detect(names: list[tuple[str, str]], has_chat_template: bool) -> dict[str, str]:
    """{'kind': base | instruction-tuned | unknown, 'evidence': why} from (where, name) pairs
    (most specific first) and whether the source carries a chat template."""
    found = _from_names(names)
    if found is not None:
        return found
    if not has_chat_template:
        return {"kind": BASE, "evidence": "no fine-tune tag and no chat template in the source"}
    return {"kind": UNKNOWN, "evidence": "no fine-tune tag in the name or metadata"}


def names_from_provenance(prov: dict[str, Any]) -> list[tuple[str, str]]:
    gm = prov.get("gguf_metadata") or {}
    hf = prov.get("hf_config") or {}
    src = prov.get("source")
    out = [("GGUF general.finetune", gm.get("general.finetune")), ("GGUF general.name", gm.get("general.name")),
           ("GGUF general.name", prov.get("gguf_name")), ("_name_or_path", hf.get("_name_or_path"))]
    if isinstance(src, str) and prov.get("source_format") == "huggingface":
        out.append(("checkpoint directory", os.path.basename(os.path.normpath(src))))
    return [(w, n) for w, n in out if isinstance(n, str) and n]


def of_header(meta: dict[str, Any]) -> dict[str, str]:
    """The variant recorded at conversion, else judged from the provenance of an older file."""
    prov = meta.get("provenance") or {}
    v = prov.get("variant")
    if isinstance(v, dict) and v.get("kind") in (BASE, INSTRUCT, UNKNOWN):
        return {"kind": v["kind"], "evidence": str(v.get("evidence", ""))}
    return detect(names_from_provenance(prov), bool(meta.get("chat_template")))


def base_chat_warning(model_name: str) -> str:
    return (f"{model_name} is a base (pretrained) model, not instruction-tuned: chat answers will be "
            f"poor or loop. Use plain text completion, or an instruction-tuned ('-it') checkpoint for chat.")
