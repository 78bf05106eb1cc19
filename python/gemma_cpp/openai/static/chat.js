// The chat page of `gemma-cpp serve` (docs/server.md). Plain JavaScript, no libraries.
//
// Rule: text from the model, the user or the server is only ever put in the page as text
// (textContent / text nodes), never parsed as HTML, so an answer holding "<script>" shows those
// characters and runs nothing. The server's Content-Security-Policy forbids inline scripts too.
//
// URLs are relative to the page ("v1/models"), so it works behind a proxy under a path prefix.
"use strict";
(() => {
  const KEY = "gemma_cpp.api_key"; // sessionStorage: gone when the tab closes
  const $ = (id) => document.getElementById(id);
  const ui = {
    model: $("model"), warning: $("warning"), keyForm: $("key-form"), key: $("api-key"), keyError: $("key-error"),
    mode: $("mode"), system: $("system"), systemLabel: $("system-label"), temperature: $("temperature"),
    maxTokens: $("max-tokens"), bounds: $("bounds"), conversation: $("conversation"), composer: $("composer"),
    input: $("input"), send: $("send"), stop: $("stop"), newChat: $("new-chat"),
  };
  const state = { config: null, model: null, history: [], controller: null, epoch: 0 };

  class ServerError extends Error {
    constructor(status, message, code, param) {
      super(message);
      Object.assign(this, { status, code, param });
    }
  }

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function headers() {
    const h = { "Content-Type": "application/json" };
    const key = sessionStorage.getItem(KEY);
    if (key) h.Authorization = "Bearer " + key;
    return h;
  }

  async function serverError(resp) { // an OpenAI-shaped error body -> ServerError
    let message = `HTTP ${resp.status} ${resp.statusText}`, code = null, param = null;
    try {
      const err = (await resp.json()).error;
      if (err && err.message) ({ message, code = null, param = null } = err);
    } catch (_) { /* not JSON: keep the status line */ }
    return new ServerError(resp.status, message, code, param);
  }

  function explain(e) { // any failure -> one sentence for the page
    if (e instanceof ServerError) {
      let s = `The server answered ${e.status || "in the stream"}: ${e.message}`;
      if (e.param) s += ` (parameter: ${e.param})`;
      if (e.code === "context_length_exceeded") s += " — the conversation no longer fits the model's context: start a New chat or send a shorter message.";
      if (e.status === 401) s += " — enter the API key the server was started with.";
      return s;
    }
    if (e instanceof TypeError) return `Cannot reach the server (${e.message}). Is gemma-cpp serve still running? Send again once it is back.`;
    return String(e.message || e);
  }

  // ------------------------------------------------------------------ messages
  function scrollDown() { ui.conversation.scrollTop = ui.conversation.scrollHeight; }

  function addMessage(kind, who) {
    const box = el("div", "msg " + kind), body = el("div", "body"), meta = el("div", "meta");
    box.append(el("div", "who", who), body, meta);
    ui.conversation.append(box);
    scrollDown();
    return { box, body, meta };
  }

  function addError(message, retry) {
    const m = addMessage("error", "Error");
    m.body.append(el("span", "text", message));
    if (retry) {
      const b = el("button", "retry", "Retry");
      b.type = "button";
      b.addEventListener("click", () => { m.box.remove(); retry(); });
      m.meta.append(b);
    }
    scrollDown();
    return m;
  }

  // Text with ``` fences: the fenced parts as <pre><code>, the rest as text. An open fence (while
  // streaming) is code up to the end. Everything goes in through textContent.
  function renderText(body, text) {
    body.replaceChildren();
    text.split("```").forEach((part, i) => {
      if (i % 2 === 0) {
        if (i > 0) part = part.replace(/^\n/, ""); // the line break after a closing fence
        if (part) body.append(el("span", "text", part));
        return;
      }
      let code = part, lang = "";
      const nl = part.indexOf("\n");
      if (nl >= 0 && /^[\w+#.-]*$/.test(part.slice(0, nl).trim())) {
        lang = part.slice(0, nl).trim();
        code = part.slice(nl + 1);
      }
      const pre = el("pre");
      if (lang) pre.dataset.lang = lang;
      pre.append(el("code", null, code.replace(/\n$/, "")));
      body.append(pre);
    });
  }

  // ------------------------------------------------------------------ server-sent events
  async function* events(resp) { // the JSON objects of an SSE response, up to "data: [DONE]"
    const reader = resp.body.getReader(), decoder = new TextDecoder();
    let buf = "", complete = false;
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) throw new Error("The connection closed before the answer was complete (did the server stop?).");
        buf += decoder.decode(value, { stream: true }).replace(/\r\n/g, "\n");
        let end;
        while ((end = buf.indexOf("\n\n")) >= 0) {
          const event = buf.slice(0, end);
          buf = buf.slice(end + 2);
          for (const line of event.split("\n")) {
            if (!line.startsWith("data:")) continue;
            const data = line.slice(5).trim();
            if (data === "[DONE]") {
              complete = true;
              return;
            }
            yield JSON.parse(data);
          }
        }
      }
    } finally {
      // Left early (an error event, bad JSON): drop the response, so the server stops generating.
      if (!complete) reader.cancel().catch(() => {});
    }
  }

  // ------------------------------------------------------------------ settings
  function number(input, label, spec) { // the control's value; empty means the server's default
    if (input.validity.badInput) throw new Error(`${label}: not a number.`);
    return input.value === "" ? spec.default : Number(input.value);
  }

  function setBound(input, attr, value, exclusive) {
    if (value === null || value === undefined || exclusive) input.removeAttribute(attr);
    else input.setAttribute(attr, String(value));
  }

  function applyConfig() {
    const p = state.config.params, ctx = state.model ? state.model.meta && state.model.meta.context_length : null;
    const t = p.temperature, m = p.max_tokens;
    setBound(ui.temperature, "min", t.min, t.min_exclusive);
    setBound(ui.temperature, "max", t.max, t.max_exclusive);
    const mMax = ctx && (m.max === null || ctx < m.max) ? ctx : m.max;
    setBound(ui.maxTokens, "min", m.min, m.min_exclusive);
    setBound(ui.maxTokens, "max", mMax, m.max_exclusive && mMax === m.max);
    if (ui.temperature.value === "") ui.temperature.value = String(t.default);
    if (ui.maxTokens.value === "") ui.maxTokens.value = String(m.default);
    const range = (b, hi) => hi === null || hi === undefined ? `≥ ${b.min}` : `${b.min} – ${hi}`;
    ui.bounds.textContent = `temperature ${range(t, t.max)} (0: greedy); max tokens ${range(m, mMax)}` +
      (ctx ? " (the context)" : "");
  }

  function setMode(mode) {
    ui.mode.value = mode;
    const chat = mode === "chat";
    ui.system.hidden = ui.systemLabel.hidden = !chat;
    ui.input.placeholder = chat ? "Message (Enter sends, Shift+Enter starts a new line)"
      : "Text to continue (Enter sends, Shift+Enter starts a new line)";
  }

  function setBusy(busy) {
    ui.send.disabled = busy || !state.model;
    ui.stop.disabled = !busy;
    ui.mode.disabled = busy;
  }

  // ------------------------------------------------------------------ connecting
  function askKey(message) {
    ui.keyForm.hidden = false;
    ui.keyError.hidden = !message;
    ui.keyError.textContent = message || "";
    ui.key.focus();
  }

  async function connect() {
    try {
      const resp = await fetch("webchat/config.json");
      if (!resp.ok) throw await serverError(resp);
      state.config = await resp.json();
      applyConfig();
      if (state.config.api_key_required && !sessionStorage.getItem(KEY)) return askKey("");
      await loadModel();
    } catch (e) {
      ui.model.textContent = "not connected";
      addError(explain(e), connect);
    }
  }

  async function loadModel() {
    const resp = await fetch("v1/models", { headers: headers() });
    if (resp.status === 401) {
      const e = await serverError(resp);
      sessionStorage.removeItem(KEY);
      ui.model.textContent = "API key needed";
      return askKey(`The server refused this API key (HTTP 401: ${e.message}). Enter the key given to ` +
        "gemma-cpp serve (--api-key or $GEMMA_CPP_API_KEY).");
    }
    if (!resp.ok) throw await serverError(resp);
    const model = (await resp.json()).data[0];
    const first = state.model === null;
    state.model = model;
    ui.keyForm.hidden = true;
    const meta = model.meta || {};
    ui.model.textContent = model.id + (meta.context_length ? ` · context ${meta.context_length} tokens` : "");
    document.title = `${model.id} · gemma_cpp`;
    ui.warning.hidden = !meta.base_model;
    ui.warning.textContent = meta.base_model ? `${model.id} is a base (pretrained) model, not instruction-tuned: ` +
      "chat answers will be poor or loop. “Complete text” mode continues your text instead (/v1/completions); " +
      "for chat, serve an instruction-tuned (-it) model." : "";
    if (first) setMode(meta.base_model ? "complete" : "chat");
    applyConfig();
    ui.input.disabled = false;
    setBusy(false);
    ui.input.focus();
  }

  // ------------------------------------------------------------------ one answer
  function finishText(finish) {
    return { stop: "stop", length: "length (max tokens or the end of the context)", stopped: "stopped by you" }[finish]
      || String(finish);
  }

  async function send() {
    if (state.controller || !state.model) return;
    const text = ui.input.value, chat = ui.mode.value === "chat";
    if (!text.trim()) return;
    const body = { stream: true, stream_options: { include_usage: true } };
    try {
      body.temperature = number(ui.temperature, "Temperature", state.config.params.temperature);
      body.max_tokens = number(ui.maxTokens, "Max tokens", state.config.params.max_tokens);
    } catch (e) {
      addError(e.message);
      return;
    }
    const turn = { role: "user", content: text };
    if (chat) {
      const system = ui.system.value.trim() ? [{ role: "system", content: ui.system.value }] : [];
      body.messages = system.concat(state.history, [turn]);
    } else {
      body.prompt = text;
    }
    ui.input.value = "";
    renderText(addMessage(chat ? "user" : "prompt", chat ? "You" : "Prompt").body, text);
    const answer = addMessage("assistant", chat ? state.model.id : "Completion");
    answer.box.dataset.state = "streaming";
    const controller = new AbortController(), epoch = state.epoch;
    state.controller = controller;
    setBusy(true);
    const t0 = performance.now();
    let out = "", pieces = 0, tFirst = null, finish = null, usage = null;
    try {
      const resp = await fetch(chat ? "v1/chat/completions" : "v1/completions",
        { method: "POST", headers: headers(), body: JSON.stringify(body), signal: controller.signal });
      if (!resp.ok) throw await serverError(resp);
      for await (const ev of events(resp)) {
        if (ev.error) throw new ServerError(0, ev.error.message, ev.error.code, ev.error.param);
        if (ev.usage) usage = ev.usage;
        const choice = ev.choices && ev.choices[0];
        if (!choice) continue;
        const piece = chat ? choice.delta && choice.delta.content : choice.text;
        if (piece) {
          if (tFirst === null) tFirst = performance.now();
          out += piece;
          pieces += 1;
          const atEnd = ui.conversation.scrollHeight - ui.conversation.scrollTop - ui.conversation.clientHeight < 40;
          renderText(answer.body, out);
          if (atEnd) scrollDown();
        }
        if (choice.finish_reason) finish = choice.finish_reason;
      }
    } catch (e) {
      if (!controller.signal.aborted) {
        answer.box.dataset.state = "error";
        if (!out) answer.box.remove();
        if (!ui.input.value) ui.input.value = text; // to send again as it was
        if (e instanceof ServerError && e.status === 401) {
          sessionStorage.removeItem(KEY);
          askKey("The server refused the API key: enter it again.");
        }
        addError(explain(e));
        return;
      }
      finish = "stopped";
    } finally {
      if (state.controller === controller) state.controller = null;
      setBusy(false);
    }
    // Done, or stopped by the user: the text so far is the answer.
    const tEnd = performance.now(), n = usage ? usage.completion_tokens : pieces;
    answer.box.dataset.state = finish === "stopped" ? "stopped" : "done";
    answer.meta.dataset.finish = finish || "";
    const parts = [`${n} token${n === 1 ? "" : "s"}${usage ? "" : " (counted in the page)"}`];
    if (tFirst !== null) {
      if (n > 1 && tEnd > tFirst) parts.push(`${((n - 1) / ((tEnd - tFirst) / 1000)).toFixed(1)} tokens/s`);
      parts.push(`first token after ${((tFirst - t0) / 1000).toFixed(2)} s`);
    }
    parts.push(`finish: ${finishText(finish)}`);
    answer.meta.textContent = parts.join(" · ");
    if (chat && out && epoch === state.epoch) state.history.push(turn, { role: "assistant", content: out });
  }

  function newChat() {
    state.epoch += 1;
    if (state.controller) state.controller.abort();
    state.history = [];
    ui.conversation.replaceChildren();
    ui.input.focus();
  }

  // ------------------------------------------------------------------ wiring
  ui.composer.addEventListener("submit", (e) => { e.preventDefault(); send(); });
  ui.input.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); send(); }
  });
  ui.stop.addEventListener("click", () => { if (state.controller) state.controller.abort(); });
  ui.newChat.addEventListener("click", newChat);
  ui.mode.addEventListener("change", () => setMode(ui.mode.value));
  ui.keyForm.addEventListener("submit", (e) => {
    e.preventDefault();
    const key = ui.key.value.trim();
    if (!key) return;
    sessionStorage.setItem(KEY, key);
    ui.key.value = "";
    ui.keyError.hidden = true;
    loadModel().catch((err) => addError(explain(err), connect));
  });
  setMode("chat");
  connect();
})();
