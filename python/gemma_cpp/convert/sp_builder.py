"""Rebuild a SentencePiece model (ModelProto bytes) from a GGUF file's `tokenizer.ggml.*` arrays.

A GGUF file carries no tokenizer.model; llama.cpp's converter (`_create_vocab_sentencepiece` in
convert_hf_to_gguf.py) writes the pieces, their scores and a type per piece instead, and then
rewrites the entries listed in tokenizer_config.json's `added_tokens_decoder`:

* added tokens marked special (or looking like `<...>`) become CONTROL (3), score -1000;
* other added tokens become USER_DEFINED (4), score -1000, with SentencePiece's whitespace mark
  U+2581 replaced by a real space (so Gemma's whitespace-run pieces "▁▁" are stored as "  ").

To get a tokenizer that splits text as the original one (and as transformers' GGUF loader and
llama.cpp do), we undo that:

* NORMAL (1) pieces keep their scores: Gemma's SentencePiece model is BPE, and the scores are
  the merge priorities (0, -1, -2, ... in vocabulary order);
* CONTROL (3) pieces other than bos/eos/pad become USER_DEFINED, so that text such as
  "<start_of_turn>" or "<unused0>" maps to its id, as llama.cpp (parse_special) and transformers
  (which adds them as special tokens) both do; bos/eos/pad stay CONTROL (our Tokenizer matches
  those in text itself) and the unknown piece becomes UNKNOWN, as SentencePiece requires;
* USER_DEFINED (4) pieces get their spaces turned back into U+2581, which is how SentencePiece
  sees whitespace after normalisation;
* BYTE (6) pieces `<0xNN>` enable byte fallback; UNUSED (5) stay unused.

The normaliser is Gemma's: identity (no NFKC), no dummy prefix unless the file asks for one
(`tokenizer.ggml.add_space_prefix`), extra whitespace kept, spaces escaped as U+2581.
"""

from __future__ import annotations

import re
from typing import Sequence

import numpy as np

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
_SPACE_MARK = "\u2581"
_BYTE_PIECE = re.compile(r"<0x[0-9A-F]{2}>")  # SentencePiece's own spelling: <0x%02X>


class TokenizerError(ValueError):
    """GGUF tokenizer metadata we cannot turn into a SentencePiece model."""


def build_sentencepiece(tokens: Sequence[str], scores: Sequence[float] | np.ndarray | None,
                        types: Sequence[int] | np.ndarray | None, *, bos: int | None, eos: int | None,
                        unk: int | None, pad: int | None, add_dummy_prefix: bool = False,
                        where: str = "GGUF") -> bytes:
    """Serialized SentencePiece BPE ModelProto for this vocabulary (see the module docstring)."""
    from sentencepiece import sentencepiece_model_pb2 as pb

    n = len(tokens)
    if n == 0:
        raise TokenizerError(f"{where}: tokenizer.ggml.tokens is empty")
    try:
        scores = np.zeros(n, np.float32) if scores is None else np.asarray(scores, dtype=np.float32).reshape(-1)
        types = np.full(n, NORMAL, np.int32) if types is None else np.asarray(types, dtype=np.int32).reshape(-1)
    except (TypeError, ValueError, OverflowError):
        raise TokenizerError(f"{where}: tokenizer.ggml.scores / token_type must be numeric arrays") from None
    if len(scores) != n or len(types) != n:
        raise TokenizerError(f"{where}: tokenizer.ggml.tokens has {n} entries but scores has {len(scores)} "
                             f"and token_type {len(types)}")
    for key, i in (("bos", bos), ("eos", eos), ("unknown", unk), ("padding", pad)):
        if i is not None and not 0 <= i < n:
            raise TokenizerError(f"{where}: tokenizer.ggml.{key}_token_id={i} is outside the vocabulary "
                                 f"(0..{n - 1})")
    if unk is None:
        found = np.flatnonzero(types == UNKNOWN)
        if len(found):
            unk = int(found[0])
        elif "<unk>" in tokens:
            unk = tokens.index("<unk>")
        else:
            raise TokenizerError(f"{where}: no unknown token (tokenizer.ggml.unknown_token_id is missing and "
                                 f"no piece has type UNKNOWN); SentencePiece needs one")
    keep_control = {i for i in (bos, eos, pad) if i is not None and i != unk}

    m = pb.ModelProto()
    P = pb.ModelProto.SentencePiece
    seen: dict[str, int] = {}
    has_bytes = False
    for i in range(n):
        piece, t, score = tokens[i], int(types[i]), float(scores[i])
        if i == unk:
            kind = P.UNKNOWN
            score = 0.0
        elif t == NORMAL:
            kind = P.NORMAL
        elif t == UNKNOWN:  # a second unknown piece: SentencePiece allows only one
            kind = P.USER_DEFINED
            score = 0.0
        elif t == CONTROL:
            kind = P.CONTROL if i in keep_control else P.USER_DEFINED
            score = 0.0
        elif t == USER_DEFINED:
            kind = P.USER_DEFINED
            piece = piece.replace(" ", _SPACE_MARK)
            score = 0.0
        elif t == UNUSED:
            kind = P.UNUSED
        elif t == BYTE:
            kind = P.BYTE
            has_bytes = True
            if not _BYTE_PIECE.fullmatch(piece):
                raise TokenizerError(f"{where}: token {i} has type BYTE but is {piece!r}, not <0xNN> "
                                     f"(two upper-case hex digits)")
            score = 0.0
        else:
            raise TokenizerError(f"{where}: token {i} ({piece!r}) has unknown token type {t}")
        if piece == "":
            raise TokenizerError(f"{where}: token {i} is an empty string")
        try:
            piece.encode("utf-8")
        except UnicodeEncodeError:  # read with surrogateescape: SentencePiece holds UTF-8 only
            raise TokenizerError(f"{where}: token {i} ({piece!r}) is not valid UTF-8") from None
        if piece in seen:
            raise TokenizerError(f"{where}: tokens {seen[piece]} and {i} are both {piece!r}; "
                                 f"a SentencePiece vocabulary needs unique pieces")
        seen[piece] = i
        sp = m.pieces.add()
        sp.piece = piece
        sp.score = score
        sp.type = kind

    ts = m.trainer_spec
    ts.model_type = pb.TrainerSpec.BPE
    ts.vocab_size = n
    ts.byte_fallback = has_bytes
    ts.unk_id = unk
    ts.bos_id = -1 if bos is None else bos
    ts.eos_id = -1 if eos is None else eos
    ts.pad_id = -1 if pad is None else pad
    ts.unk_piece = m.pieces[unk].piece
    if bos is not None:
        ts.bos_piece = m.pieces[bos].piece
    if eos is not None:
        ts.eos_piece = m.pieces[eos].piece
    if pad is not None:
        ts.pad_piece = m.pieces[pad].piece
    ts.split_digits = True
    ts.allow_whitespace_only_pieces = True
    ns = m.normalizer_spec
    ns.name = "identity"
    ns.add_dummy_prefix = bool(add_dummy_prefix)
    ns.remove_extra_whitespaces = False
    ns.escape_whitespaces = True
    out = m.SerializeToString()
    import sentencepiece as spm

    try:  # what SentencePiece itself refuses is refused here, not when the converted model loads
        spm.SentencePieceProcessor(model_proto=out)
    except RuntimeError as e:
        raise TokenizerError(f"{where}: the tokenizer arrays do not make a valid SentencePiece model "
                             f"({str(e).strip()})") from None
    return out
