"""Special token ids read from a SentencePiece model."""

from __future__ import annotations

from typing import Any

import sentencepiece as spm


def _piece_id(sp: spm.SentencePieceProcessor, piece: str) -> int | None:
    i = sp.piece_to_id(piece)
    return i if sp.id_to_piece(i) == piece else None


def special_ids_from_sentencepiece(model_bytes: bytes) -> dict[str, Any]:
    sp = spm.SentencePieceProcessor(model_proto=model_bytes)
    special: dict[str, Any] = {
        "bos": sp.bos_id(),
        "eos": [sp.eos_id()] if sp.eos_id() >= 0 else [],
        "pad": sp.pad_id(),
        "unk": sp.unk_id(),
        "start_of_turn": _piece_id(sp, "<start_of_turn>"),
        "end_of_turn": _piece_id(sp, "<end_of_turn>"),
    }
    return special
