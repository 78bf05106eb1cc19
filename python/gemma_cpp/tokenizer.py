"""SentencePiece tokenizer, Gemma chat template and UTF-8-safe incremental detokenisation."""

from __future__ import annotations

import re
from typing import Any, Iterable, Sequence

import sentencepiece as spm

# The template of the Gemma 1 instruction-tuned checkpoints (tokenizer_config.json), used when a
# checkpoint carries none. Rendered the way transformers' apply_chat_template renders templates.
GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}"
    "{% endif %}{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}"
)


class ChatTemplateError(ValueError):
    """The chat template rejected the messages (e.g. roles that do not alternate). `param` names
    the offending field (e.g. "messages[2].role") where one is known."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


CHAT_ROLES = ("system", "user", "assistant")


def fold_system(messages: Sequence[dict[str, str]]) -> list[dict[str, str]]:
    """Check the roles and put a leading system message at the start of the first user turn.

    Gemma's templates have no system role (Gemma 1's rejects one; Gemma 3's folds it into the
    first user turn itself, as "system\n\nuser"), so every entry point does that fold here, the
    same way for every model. Only the first message may be a system message.
    """
    if isinstance(messages, (str, bytes, dict)) or not isinstance(messages, Sequence):
        raise ChatTemplateError(f"messages must be a list of dicts with 'role' and 'content', got "
                                f"{type(messages).__name__}")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise ChatTemplateError(f"messages[{i}] must be a dict with 'role' and 'content', got {m!r}",
                                    f"messages[{i}]")
        role = m["role"]
        if role not in CHAT_ROLES:
            raise ChatTemplateError(f"messages[{i}]: role {role!r} is not supported; Gemma's chat template "
                                    f"takes 'user' and 'assistant' turns, and one 'system' message first",
                                    f"messages[{i}].role")
        if not isinstance(m["content"], str):
            raise ChatTemplateError(f"messages[{i}].content must be a string, got {type(m['content']).__name__}",
                                    f"messages[{i}].content")
        if role == "system" and i > 0:
            raise ChatTemplateError(f"messages[{i}]: a system message is only supported as the first message",
                                    f"messages[{i}].role")
        out.append({"role": role, "content": m["content"]})
    if out and out[0]["role"] == "system":
        system = out.pop(0)["content"]
        if out and out[0]["role"] == "user":
            out[0] = {"role": "user", "content": f"{system}\n\n{out[0]['content']}"}
        else:
            out.insert(0, {"role": "user", "content": system})
    return out


class Tokenizer:
    def __init__(self, model_proto: bytes, special: dict[str, Any], chat_template: str | None = None):
        self.sp = spm.SentencePieceProcessor(model_proto=model_proto)
        self.special = special
        self.bos_id: int = int(special["bos"])
        self.eos_ids: list[int] = [int(i) for i in special.get("eos", [])]
        self.end_of_turn_id: int | None = special.get("end_of_turn")
        self.chat_template = chat_template or GEMMA_CHAT_TEMPLATE
        # Special tokens are matched in text before SentencePiece sees it, as transformers does.
        self._special_ids: dict[str, int] = {}
        for key in ("bos", "pad", "start_of_turn", "end_of_turn"):
            i = special.get(key)
            if isinstance(i, int) and i >= 0:
                self._special_ids[self.sp.id_to_piece(i)] = i
        for i in self.eos_ids:
            self._special_ids[self.sp.id_to_piece(i)] = i
        pattern = "|".join(re.escape(p) for p in sorted(self._special_ids, key=len, reverse=True))
        self._special_re = re.compile(f"({pattern})") if pattern else None
        self._template = None
        self._token_bytes: tuple[list[bytes], list[int]] | None = None

    @property
    def vocab_size(self) -> int:
        return self.sp.get_piece_size()

    @property
    def stop_ids(self) -> set[int]:
        """Ids that end a generation: EOS and <end_of_turn>."""
        ids = set(self.eos_ids)
        if self.end_of_turn_id is not None:
            ids.add(self.end_of_turn_id)
        return ids

    def encode(self, text: str, add_bos: bool = True) -> list[int]:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as e:  # a lone surrogate (e.g. "\ud800" in JSON): not text
            raise ValueError(f"the text holds a lone surrogate {text[e.start]!r} at index {e.start}, which "
                             f"is not valid Unicode text (a broken UTF-16 pair?)") from None
        ids = [self.bos_id] if add_bos else []
        parts = self._special_re.split(text) if self._special_re else [text]
        for part in parts:
            if not part:
                continue
            if part in self._special_ids:
                ids.append(self._special_ids[part])
            else:
                ids.extend(self.sp.encode(part))
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        return self.sp.decode([int(i) for i in ids])

    def id_to_piece(self, i: int) -> str:
        return self.sp.id_to_piece(int(i))

    def token_bytes(self) -> tuple[list[bytes], list[int]]:
        """The bytes each id stands for in generated text, and the special ids.

        A byte piece `<0xNN>` is that one byte; "▁" is a space; a control or unknown piece, one
        of our special ids (bos, eos, turn markers) or a user-defined `<...>` piece (Gemma's
        `<unusedN>`, `<mask>`, `<start_of_image>`, ...: llama.cpp's rule) is special, and so never
        text. What a grammar engine (structured.py) and logprobs' token bytes need. (Cached.)
        """
        if self._token_bytes is None:
            self._token_bytes = self._make_token_bytes()
        return self._token_bytes

    def _make_token_bytes(self) -> tuple[list[bytes], list[int]]:
        sp = self.sp
        special_ids = set(self._special_ids.values())
        out: list[bytes] = []
        special: list[int] = []
        for i in range(sp.get_piece_size()):
            p = sp.id_to_piece(i)
            if sp.is_byte(i):
                out.append(bytes([int(p[3:5], 16)]))
            elif (sp.is_control(i) or sp.is_unknown(i) or i in special_ids
                  or (len(p) > 2 and p[0] == "<" and p[-1] == ">")):
                out.append(p.encode("utf-8"))
                special.append(i)
            else:
                out.append(p.replace("\u2581", " ").encode("utf-8"))
        return out, special

    def apply_chat_template(self, messages: Sequence[dict[str, str]], add_generation_prompt: bool = True) -> str:
        """The prompt string, exactly as transformers' apply_chat_template(tokenize=False) renders it."""
        if self._template is None:
            self._template = _compile_template(self.chat_template)
        messages = fold_system(messages)
        names = {"bos_token": self.id_to_piece(self.bos_id),
                 "eos_token": self.id_to_piece(self.eos_ids[0]) if self.eos_ids else "",
                 "pad_token": self.id_to_piece(self.special.get("pad", 0) or 0),
                 "unk_token": self.id_to_piece(self.special.get("unk", 3) or 0)}
        try:
            return self._template.render(messages=list(messages), add_generation_prompt=add_generation_prompt,
                                         **names)
        except ChatTemplateError:
            raise
        except Exception as e:  # jinja errors: report what the template said
            raise ChatTemplateError(f"chat template failed: {e}") from None


def _compile_template(source: str):
    from jinja2.exceptions import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str):
        raise ChatTemplateError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=["jinja2.ext.loopcontrols"])
    env.globals["raise_exception"] = raise_exception
    try:
        return env.from_string(source)
    except TemplateError as e:
        raise ChatTemplateError(f"invalid chat template: {e}") from None


class StreamDecoder:
    """Turns generated ids into text pieces that join to exactly decode(all ids).

    Each step decodes the recent ids in the context of the token before them (so a leading
    space is kept) and holds back text that ends in an incomplete UTF-8 sequence (U+FFFD).
    """

    _REBASE = 64  # ids kept in the decode window before it moves forward

    def __init__(self, tokenizer: Tokenizer, context: Sequence[int] = ()):
        self.tok = tokenizer
        self.prefix: list[int] = list(context[-1:])
        self.ids: list[int] = []
        self.emitted = 0  # characters of the window's text already returned

    def _window_text(self) -> str:
        base = self.tok.decode(self.prefix)
        full = self.tok.decode(self.prefix + self.ids)
        return full[len(base):] if full.startswith(base) else full

    def push(self, token: int) -> str:
        self.ids.append(int(token))
        text = self._window_text()
        if text.endswith("\ufffd"):
            return ""
        delta = text[self.emitted:]
        self.emitted = len(text)
        if len(self.ids) >= self._REBASE:  # everything is emitted: start a new window
            self.prefix = self.ids[-1:]
            self.ids = []
            self.emitted = 0
        return delta

    def flush(self) -> str:
        text = self._window_text()
        delta = text[self.emitted:]
        self.emitted = len(text)
        return delta


class StopMatcher:
    """Finds stop strings in streamed text, holding back a tail that may begin one."""

    def __init__(self, stops: Iterable[str] | None):
        self.stops = [s for s in (stops or []) if s]
        self.text = ""
        self.released = 0

    def feed(self, piece: str) -> tuple[str, bool]:
        """(text safe to release now, whether a stop string was hit)."""
        self.text += piece
        if not self.stops:
            out = self.text[self.released:]
            self.released = len(self.text)
            return out, False
        hit = min((i for i in (self.text.find(s, max(0, self.released - len(s) + 1)) for s in self.stops)
                   if i >= 0), default=-1)
        if hit >= 0:
            out = self.text[self.released:hit]
            self.released = hit
            self.text = self.text[:hit]
            return out, True
        hold = 0
        for s in self.stops:
            for k in range(min(len(s) - 1, len(self.text)), 0, -1):
                if self.text.endswith(s[:k]):
                    hold = max(hold, k)
                    break
        upto = max(self.released, len(self.text) - hold)
        out = self.text[self.released:upto]
        self.released = upto
        return out, False

    def finish(self) -> str:
        out = self.text[self.released:]
        self.released = len(self.text)
        return out
