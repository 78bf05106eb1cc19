"""`gemma_cpp.Model`: load a .gcpp file and generate, chat, score.

Threading: a Model owns one KV-cache session guarded by a lock, so concurrent calls on the
same Model are safe and run one after another. A stream holds the lock from its first item
until it ends, is closed or is dropped; calling the same Model from the stream's own thread
meanwhile raises RuntimeError (waiting would never end). For parallel generation give each
thread its own `model.clone()`: clones share the mapped weights (no extra memory for them) and
have their own KV cache. The GIL is released while the C++ core computes.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from . import _core, batching, speculative as speculative_options
from .call_guard import CallGuard as _CallGuard
from .device import check_device
from .gcpp_format import FormatError, read_header, tensor_table
from .generation import Generation, TokenMask, stop_strings
from .openai import responses as openai_responses  # never imports this module: no cycle
from .params import (DEFAULT_KV_DTYPE, DEFAULT_MAX_TOKENS, KV_DTYPES, ContextLengthError, InvalidRequestError, check,
                     resolve_seed)
from .tokenizer import Tokenizer
from .variant import BASE, base_chat_warning, of_header


class BaseModelChatWarning(UserWarning):
    """A chat prompt was built for a base (pretrained) model, which is not trained to answer."""


@dataclass(frozen=True)
class ModelConfig:
    """Architecture facts of a loaded model."""

    model_type: str
    family: int
    n_layers: int
    d_model: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    ffn_dim: int
    vocab_size: int
    max_position: int
    sliding_window: int
    weight_dtype: str
    isa: str
    raw: dict

    def __repr__(self) -> str:
        return (f"ModelConfig({self.model_type}, layers={self.n_layers}, d={self.d_model}, "
                f"heads={self.n_heads}/{self.n_kv_heads}x{self.head_dim}, ffn={self.ffn_dim}, "
                f"vocab={self.vocab_size}, ctx={self.max_position}, weights={self.weight_dtype}, "
                f"isa={self.isa})")


def _check_threads(n) -> None:
    check("n_threads", n)  # the bound in params.py (the C++ pool's own, MAX_THREADS)


def _check_kv_dtype(kv_dtype) -> None:
    if kv_dtype not in KV_DTYPES:
        raise ValueError(f"kv_dtype must be one of {', '.join(KV_DTYPES)}, got {kv_dtype!r}")


class Model:
    """A Gemma model loaded from a .gcpp file.

    Args:
        path: the .gcpp file written by `gemma-convert`.
        n_threads: compute threads (default: all cores).
        max_seq_len: longest sequence (prompt + generated) a session holds; default the model's
            context length. KV memory grows only with the tokens actually held.
        seed: the sampling seed for calls that give none. None (the default) draws a fresh random
            seed for each call; an explicit seed makes every call start from it (reproducible).
        kv_dtype: element type of the KV cache: "f32" (default, exact), "f16" (half the memory,
            mean KL 5e-7 to f32 on the real 270M), "bf16" (half) or "int8" (28%: int8 levels with
            a scale per 32 values, keys rotated first; KL 3e-4). docs/quantization.md gives each
            one's measured quality.
        device: "cpu" (default), or "cuda" / "cuda:N" in a build with the CUDA backend
            (docs/cuda.md; DeviceError when that GPU cannot be used here).
    """

    def __init__(self, path: str | os.PathLike, *, n_threads: int | None = None,
                 max_seq_len: int | None = None, seed: int | None = None, kv_dtype: str = DEFAULT_KV_DTYPE,
                 device: str = "cpu", _share: "Model | None" = None):
        if _share is not None:
            self._header, self._core, self.tokenizer = _share._header, _share._core, _share.tokenizer
        else:
            device = check_device(device)
            self._header = read_header(path)
            meta = self._header.meta
            try:
                self._core = _core.ModelCore(self._header.path, dict(meta["config"]),
                                             list(tensor_table(self._header)), self._header.data_start, device)
            except (RuntimeError, ValueError) as e:
                raise FormatError(str(e)) from None
            tok = meta["tokenizer"]
            try:
                self.tokenizer = Tokenizer(self._header.read_blob(tok), meta["special"], meta.get("chat_template"))
            except (KeyError, TypeError, ValueError, IndexError, RuntimeError) as e:  # sentencepiece's too
                if isinstance(e, FormatError):
                    raise
                raise FormatError(f"{self._header.path}: the tokenizer or the special token ids are corrupt "
                                  f"({type(e).__name__}: {e}); re-convert the checkpoint") from None
        cfg = self._header.config
        if n_threads is not None:
            _check_threads(n_threads)
        ctx = int(cfg["max_position"])
        if max_seq_len is None:
            max_seq_len = ctx
        if not isinstance(max_seq_len, int) or not 0 < max_seq_len <= ctx:
            raise ValueError(f"max_seq_len must be an int in [1, {ctx}] (the model's context length), "
                             f"got {max_seq_len!r}")
        self._seed = None if seed is None else check("seed", seed)
        _check_kv_dtype(kv_dtype)
        # The C++ Generator: this Model's KV cache (a Session) and the decode loop over it.
        self._session = _core.Generator(self._core, max_seq_len, n_threads or 0, resolve_seed(self._seed),
                                        kv_dtype)
        self._lock = _CallGuard()
        self._warned_base_chat = False
        weight_dtypes = sorted({t["dtype"] for t in self._header.tensors if len(t["shape"]) == 2})
        self.config = ModelConfig(
            model_type=cfg.get("model_type", f"gemma{cfg['family']}"), family=cfg["family"],
            n_layers=cfg["n_layers"], d_model=cfg["d_model"], n_heads=cfg["n_heads"],
            n_kv_heads=cfg["n_kv_heads"], head_dim=cfg["head_dim"], ffn_dim=cfg["ffn_dim"],
            vocab_size=cfg["vocab_size"], max_position=ctx, sliding_window=cfg["sliding_window"],
            weight_dtype="/".join(weight_dtypes), isa=_core.active_isa(), raw=dict(cfg))

    # ------------------------------------------------------------------ basics
    @property
    def path(self) -> str:
        return self._header.path

    @property
    def device(self) -> str:
        """Where this Model runs: "cpu" or "cuda:N"."""
        return self._core.device

    @property
    def kv_dtype(self) -> str:
        """Element type of the KV cache ("f32", "f16", "bf16" or "int8")."""
        return self._session.kv_dtype

    @property
    def kv_bytes_per_token(self) -> int:
        """KV cache bytes one more token of context costs (keys and values of every layer)."""
        return self._session.kv_bytes_per_token

    def kv_bytes_per_token_of(self, kv_dtype: str) -> int:
        """What kv_bytes_per_token would be with another KV element type."""
        _check_kv_dtype(kv_dtype)
        return _core.Generator(self._core, 1, 1, 0, kv_dtype).kv_bytes_per_token

    @property
    def metadata(self) -> dict[str, Any]:
        """The file's header: config, special ids, chat template, provenance, tensor table."""
        return self._header.meta

    @property
    def variant(self) -> dict[str, str]:
        """{'kind': 'base' | 'instruction-tuned' | 'unknown', 'evidence': ...} (see variant.py)."""
        return of_header(self._header.meta)

    @property
    def is_base_model(self) -> bool:
        """True for a base (pretrained) model, which continues text but does not chat."""
        return self.variant["kind"] == BASE

    @property
    def max_seq_len(self) -> int:
        return self._session.max_seq_len

    @property
    def n_threads(self) -> int:
        return self._session.n_threads

    @n_threads.setter
    def n_threads(self, n: int) -> None:
        _check_threads(n)
        with self._lock.hold():
            self._session.n_threads = n

    def clone(self) -> "Model":
        """A Model sharing these weights with its own KV cache (for another thread). The cache starts
        as a copy of this one's (its tokens' keys and values), so a prompt that continues them is
        not prefilled again, and the clone's logits equal this Model's bit for bit."""
        m = Model(self.path, n_threads=self.n_threads, max_seq_len=self.max_seq_len, seed=self._seed,
                  kv_dtype=self.kv_dtype, _share=self)
        if self._lock.held_here():  # an open stream of this thread: paused between tokens, consistent
            m._session.copy_cache_from(self._session)
        else:
            with self._lock.hold():
                m._session.copy_cache_from(self._session)
        return m

    def tokenize(self, text: str | bytes, add_bos: bool = True) -> list[int]:
        """Token ids of `text` (a str, or UTF-8 bytes as llama-cpp-python takes), BOS first by default."""
        if isinstance(text, (bytes, bytearray)):
            try:
                text = bytes(text).decode("utf-8")
            except UnicodeDecodeError as e:
                raise ValueError(f"tokenize: the bytes are not valid UTF-8 ({e})") from None
        if not isinstance(text, str):
            raise TypeError(f"tokenize: expected str or bytes, got {type(text).__name__}")
        return self.tokenizer.encode(text, add_bos=add_bos)

    def detokenize(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(ids)

    @property
    def cached_tokens(self) -> list[int]:
        """The token ids the KV cache holds now (the conversation so far)."""
        return list(self._session.tokens)

    def reset(self) -> None:
        """Forget the cached conversation."""
        with self._lock.hold():
            self._session.reset()

    def __repr__(self) -> str:
        return f"Model({self.path!r}, {self.config!r})"

    # ------------------------------------------------------------------ scoring
    def _check_ids(self, ids: Sequence[int]) -> list[int]:
        if isinstance(ids, np.ndarray):
            ids = ids.tolist()
        ids = list(ids)
        vocab = self.config.vocab_size
        for i, t in enumerate(ids):
            if isinstance(t, bool) or not isinstance(t, (int, np.integer)):
                raise TypeError(f"token ids must be ints; item {i} is {type(t).__name__}")
            if not 0 <= t < vocab:
                raise ValueError(f"token id {t} at index {i} is outside the vocabulary [0, {vocab})")
        return [int(t) for t in ids]

    def logits(self, ids: Sequence[int] | str) -> np.ndarray:
        """Next-token logits at every position: float32 array [len(ids), vocab], one prefill."""
        if isinstance(ids, str):
            ids = self.tokenize(ids)
        ids = self._check_ids(ids)
        if not ids:
            raise ValueError("logits: empty input")
        self._check_fits(len(ids), 0)
        with self._lock.hold():
            self._session.reset()
            return self._session.eval(ids, all_logits=True)

    def _check_fits(self, n_prompt: int, max_new_tokens: int) -> None:
        if n_prompt > self.max_seq_len:
            raise ContextLengthError(f"prompt has {n_prompt} tokens, more than max_seq_len={self.max_seq_len} "
                                     f"(model context {self.config.max_position})")

    # ------------------------------------------------------------------ generation
    def generate(self, prompt: str | Sequence[int] | Sequence[str | Sequence[int]], *,
                 max_new_tokens: int = DEFAULT_MAX_TOKENS,
                 temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0, min_p: float = 0.0,
                 repetition_penalty: float = 1.0, presence_penalty: float = 0.0, frequency_penalty: float = 0.0,
                 seed: int | None = None, stop: Sequence[str] | str | None = None, stream: bool = False,
                 ignore_eos: bool = False, add_bos: bool = True, token_mask: TokenMask | None = None,
                 json_schema: dict | str | None = None, regex: str | None = None, grammar: str | None = None,
                 logprobs: bool = False, top_logprobs: int = 0, logit_bias: dict | None = None,
                 batch_size: int | None = None, speculative: str | None = None, draft_model: "Model | None" = None,
                 draft_len: int | None = None, ngram_min: int | None = None, ngram_max: int | None = None):
        """Continue `prompt`, or each prompt of a list of them (batched generation).

        A string prompt is tokenised (with BOS unless add_bos=False) and the result is the
        generated text (or, with stream=True, an iterator of text pieces that join to it).
        A list of token ids is used as-is and the result is the list of generated ids (or an
        iterator of ids). Generation ends at max_new_tokens, an EOS or <end_of_turn> token
        (unless ignore_eos), a `stop` string (not included in the text), or the context end.
        The stream is a `gemma_cpp.generation.Generation`: its `stop_reason` says which.

        Sampling, in this order: repetition_penalty (prompt and generated tokens), presence_penalty
        and frequency_penalty (generated tokens only, as OpenAI's), token_mask, then with
        temperature > 0: temperature, top_k, top_p, min_p and a draw from a generator seeded with
        `seed`. An explicit seed (here or the Model's) gives the same output for the same call; no
        seed draws a fresh random one per call. temperature=0 is greedy and ignores the seed.
        token_mask: the allowed next ids, a bitmask (generation.token_mask(ids, vocab)) or a
        function of the ids generated so far returning one (or None) before each step.
        json_schema (a dict or JSON text), regex or grammar (Lark as llguidance takes it, or GBNF):
        the output must match it (docs/structured.md; needs the [structured] extra). It is applied
        to every token, greedy too; generation ends when the constraint is complete and allows no
        more (stop_reason "grammar"). logprobs=True (with top_logprobs=k, in [0, 20]) records each
        token's log-probability and the k best, from the distribution the sampler drew from (after
        penalties and mask, before temperature): read them from the stream's `logprobs` (stream=True),
        or use create_completion for OpenAI's shapes. logit_bias ({token id: bias in [-100, 100]},
        OpenAI's) is added to those logits after the penalties and before the mask.
        Speculative decoding (docs/speculative.md): speculative="ngram" (prompt lookup; ngram_min,
        ngram_max) or draft_model=m (a Model with the same vocabulary), draft_len tokens drafted per
        step; greedy output is unchanged, sampled output keeps its distribution.
        Parameter bounds: params.py.

        A list of prompts (strings, or token id lists) gives the list of results, in order; up to
        batch_size (default 8) are decoded together, one weight pass per step (batching.py). Each
        result equals generating that prompt alone; prompt i samples with seed `seed + i` (or
        seed[i] from a list of seeds; no seed: a random one each). Not with stream=True.
        """
        if batching.is_prompt_list(prompt):
            kw = speculative_options.batch_options(  # (a list of prompts: no speculation)
                {k: v for k, v in locals().items() if k not in ("self", "prompt", "as_text")})
            return batching.generate_batch(self, prompt, **kw)
        as_text = isinstance(prompt, str)
        max_new_tokens = check("max_new_tokens", max_new_tokens)
        top_logprobs = check("top_logprobs", top_logprobs)
        if top_logprobs and not logprobs:
            raise InvalidRequestError("top_logprobs needs logprobs=True", "top_logprobs")
        stop = stop_strings(stop)
        if stop and not as_text:
            raise ValueError("stop strings apply to text prompts; with token ids, check the ids yourself")
        ids = self.tokenize(prompt, add_bos=add_bos) if as_text else self._check_ids(prompt)
        if not ids:
            raise ValueError("generate: empty prompt (give text or at least one token id)")
        gen = Generation(self, ids, max_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                         min_p=min_p, repetition_penalty=repetition_penalty, presence_penalty=presence_penalty,
                         frequency_penalty=frequency_penalty, seed=seed, stop=stop, ignore_eos=ignore_eos,
                         token_mask=token_mask, json_schema=json_schema, regex=regex, grammar=grammar,
                         logprobs=top_logprobs if logprobs else None, logit_bias=logit_bias, text=as_text,
                         speculative=speculative, draft_model=draft_model, draft_len=draft_len, ngram_min=ngram_min,
                         ngram_max=ngram_max)
        if stream:
            return gen
        out = list(gen)
        return "".join(out) if as_text else out

    def chat(self, messages: Sequence[dict[str, str]], **generate_kwargs):
        """Answer the last user message of `messages` (dicts with 'role' and 'content').

        The prompt is the model's chat template (transformers' apply_chat_template with
        add_generation_prompt=True). The KV cache keeps the conversation, so the next turn only
        processes the new tokens. Takes generate()'s keyword arguments; returns text (or a stream).
        """
        prompt = self.apply_chat_template(messages)
        ids = self.tokenize(prompt, add_bos=False)  # the template writes <bos> itself
        generate_kwargs.pop("add_bos", None)
        stream = generate_kwargs.pop("stream", False)
        generate_kwargs["max_tokens"] = generate_kwargs.pop("max_new_tokens", DEFAULT_MAX_TOKENS)
        if generate_kwargs.pop("logprobs", False):
            generate_kwargs["logprobs"] = generate_kwargs.pop("top_logprobs", 0)
        elif generate_kwargs.pop("top_logprobs", 0):
            raise InvalidRequestError("top_logprobs needs logprobs=True", "top_logprobs")
        gen = Generation(self, ids, **generate_kwargs)
        return gen if stream else gen.run()

    def apply_chat_template(self, messages: Sequence[dict[str, str]], add_generation_prompt: bool = True) -> str:
        """The chat prompt text. A leading system message goes into the first user turn, for every
        model alike (tokenizer.fold_system); roles other than system/user/assistant raise
        ChatTemplateError. Warns once (BaseModelChatWarning) when the model is a base model."""
        text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt)
        if add_generation_prompt:
            self.warn_if_base_model(stacklevel=3)
        return text

    def warn_if_base_model(self, stacklevel: int = 2) -> None:
        """Warn (BaseModelChatWarning, once per Model) that a base model is about to be used for chat."""
        if self.is_base_model and not self._warned_base_chat:
            self._warned_base_chat = True
            warnings.warn(base_chat_warning(os.path.basename(self.path)), BaseModelChatWarning,
                          stacklevel=stacklevel + 1)

    # ------------------------------------------------------------------ OpenAI-shaped calls
    def create_completion(self, prompt, **kw):
        """llama-cpp-python's `create_completion`: an OpenAI `text_completion` dict (or chunks).
        See `gemma_cpp.openai.responses.create_completion`."""
        return openai_responses.create_completion(self, prompt, **kw)

    def create_chat_completion(self, messages, **kw):
        """llama-cpp-python's `create_chat_completion`: an OpenAI `chat.completion` dict (or chunks).
        See `gemma_cpp.openai.responses.create_chat_completion`."""
        return openai_responses.create_chat_completion(self, messages, **kw)
