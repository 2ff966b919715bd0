// trioagents.js: the browser client for trioagents servers. A dependency-free ES module.
//
//   import { AgentClient, UampChat } from "/static/trioagents.js";
//
// * AgentClient: a connection agent instance (PROTOCOLS.md §4): messages, shared state,
//   RPC with streaming, reconnect with backoff and jitter, no reconnect after 1008 or
//   4000-4999, and a bounded queue (100) for sends while disconnected.
// * UampChat: a small UAMP client (§1) for chat pages: one session, streamed text
//   deltas, the same reconnect rules, app-level pings (30 s) and a 40 s silence watchdog.
//
// Both are EventTargets. Events: "status" (detail: "connecting" | "open" | "reconnecting" |
// "closed"), "open", "close" (detail: {code, reason, terminal}), "message" (detail: data).

/** `ChatAgent` -> `chat-agent` (the server accepts both). */
export function kebabCase(name) {
  return name
    .replace(/([a-z0-9])([A-Z])/g, "$1-$2")
    .replace(/([A-Z])([A-Z][a-z])/g, "$1-$2")
    .replace(/_/g, "-")
    .toLowerCase();
}

/** Close codes after which a client must not reconnect: 1008 and 4000-4999. */
export function isTerminal(code) {
  return code === 1008 || (code >= 4000 && code <= 4999);
}

/** Attempt n >= 1 waits min(base * 2^(n-1), max) * U(0.5, 1) milliseconds. */
export function backoffDelay(attempt, base = 1000, max = 60000, rnd = Math.random()) {
  return Math.min(base * 2 ** (attempt - 1), max) * (0.5 + 0.5 * rnd);
}

function wsBase(host, protocol) {
  const loc = globalThis.location;
  const h = host ?? loc.host;
  const p = protocol ?? (loc && loc.protocol === "https:" ? "wss" : "ws");
  return `${p}://${h}`;
}

function withQuery(url, query) {
  const params = new URLSearchParams(query || {}).toString();
  return params ? `${url}?${params}` : url;
}

/** A WebSocket that reconnects (the shared machinery of both clients). */
export class ReconnectingSocket extends EventTarget {
  /**
   * @param {() => Promise<string>} makeUrl called before every connect (fresh tokens).
   * @param {object} options maxQueued, backoffBase, backoffMax, backoffReset (ms), random.
   */
  constructor(makeUrl, options = {}) {
    super();
    this._makeUrl = makeUrl;
    this.maxQueued = options.maxQueued ?? 100;
    this.backoffBase = options.backoffBase ?? 1000;
    this.backoffMax = options.backoffMax ?? 60000;
    this.backoffReset = options.backoffReset ?? 30000;
    this.random = options.random ?? Math.random;
    this.status = "connecting";
    this.closeInfo = null; // set once closed for good
    this.connects = 0;
    this._queue = [];
    this._attempt = 0;
    this._ws = null;
    this._timer = null;
    this._closing = false;
    queueMicrotask(() => this._connect());
  }

  _setStatus(status) {
    if (this.status === status) return;
    this.status = status;
    this.dispatchEvent(new CustomEvent("status", { detail: status }));
  }

  async _connect() {
    if (this._closing) return;
    let url;
    try {
      url = await this._makeUrl();
    } catch (err) {
      this._scheduleReconnect();
      return;
    }
    if (this._closing) return;
    const ws = new WebSocket(url);
    ws.binaryType = "arraybuffer";
    this._ws = ws;
    let openedAt = 0;
    ws.addEventListener("open", () => {
      openedAt = Date.now();
      this.connects += 1;
      this._setStatus("open");
      this._onOpen(); // first: e.g. UAMP's session.create precedes queued inputs
      const queued = this._queue.splice(0);
      for (const data of queued) ws.send(data);
      this.dispatchEvent(new Event("open"));
    });
    ws.addEventListener("message", (ev) => this._onMessage(ev.data));
    ws.addEventListener("close", (ev) => {
      if (this._ws !== ws) return;
      this._ws = null;
      const terminal = this._closing || isTerminal(ev.code);
      const info = { code: ev.code, reason: ev.reason, terminal };
      this._onClose(info);
      this.dispatchEvent(new CustomEvent("close", { detail: info }));
      if (terminal) {
        this.closeInfo = info;
        this._setStatus("closed");
        return;
      }
      if (openedAt && Date.now() - openedAt >= this.backoffReset) this._attempt = 0;
      this._scheduleReconnect();
    });
  }

  _scheduleReconnect() {
    if (this._closing) return;
    this._setStatus("reconnecting");
    this._attempt += 1;
    const delay = backoffDelay(this._attempt, this.backoffBase, this.backoffMax, this.random());
    this._timer = setTimeout(() => this._connect(), delay);
  }

  /** Whether a connection is open right now. */
  get connected() {
    return this._ws !== null && this._ws.readyState === WebSocket.OPEN;
  }

  /** Send now, or queue until the next connection (throws when the queue is full). */
  send(data) {
    if (this.closeInfo) throw new Error(`closed (${this.closeInfo.code} ${this.closeInfo.reason})`);
    if (typeof data !== "string" && !(data instanceof ArrayBuffer) && !ArrayBuffer.isView(data)) {
      data = JSON.stringify(data);
    }
    if (this.connected) {
      this._ws.send(data);
      return;
    }
    if (this._queue.length >= this.maxQueued) {
      throw new Error(`${this.maxQueued} messages already wait for the connection`);
    }
    this._queue.push(data);
  }

  /** Close for good (no reconnect). */
  close(code = 1000, reason = "") {
    this._closing = true;
    clearTimeout(this._timer);
    if (this._ws) this._ws.close(code, reason);
    else {
      this.closeInfo = { code, reason, terminal: true };
      this._setStatus("closed");
    }
  }

  _onOpen() {}
  _onMessage(data) {
    this.dispatchEvent(new CustomEvent("message", { detail: data }));
  }
  _onClose(info) {}
}

/** An instance of a connection agent: `new AgentClient({agent: "ChatRoom", name: "lobby"})`. */
export class AgentClient extends ReconnectingSocket {
  /**
   * @param {object} o agent, name ("default"), host (location.host), protocol ("ws"|"wss"),
   *   prefix ("agents"), query (object, or a function returning one / a promise of one),
   *   onMessage, onStateUpdate, onOpen, onClose, plus ReconnectingSocket options.
   */
  constructor(o) {
    const agent = kebabCase(o.agent);
    const name = o.name ?? "default";
    const prefix = (o.prefix ?? "agents").replace(/^\/|\/$/g, "");
    const base = `${wsBase(o.host, o.protocol)}/${prefix}/${encodeURIComponent(agent)}/${encodeURIComponent(name)}`;
    super(async () => withQuery(base, typeof o.query === "function" ? await o.query() : o.query), o);
    this.agent = agent;
    this.name = name;
    this.identity = null;
    this.state = undefined;
    this.stateVersion = 0;
    this._calls = new Map();
    this._nextId = 1;
    if (o.onMessage) this.addEventListener("message", (e) => o.onMessage(e.detail));
    if (o.onStateUpdate) this.addEventListener("state", (e) => o.onStateUpdate(e.detail.state, e.detail.source));
    if (o.onOpen) this.addEventListener("open", () => o.onOpen());
    if (o.onClose) this.addEventListener("close", (e) => o.onClose(e.detail));
  }

  _onMessage(data) {
    if (typeof data === "string" && data.startsWith('{"type":"')) {
      let frame = null;
      try {
        frame = JSON.parse(data);
      } catch {}
      if (frame && frame.type === "cf_agent_identity") {
        this.identity = frame;
        return;
      }
      if (frame && frame.type === "cf_agent_state") {
        this.state = frame.state;
        this.stateVersion = frame.version ?? this.stateVersion;
        this.dispatchEvent(new CustomEvent("state", { detail: { state: frame.state, source: "server" } }));
        return;
      }
      if (frame && frame.type === "cf_agent_state_error") {
        this.dispatchEvent(new CustomEvent("state_error", { detail: frame.error }));
        return;
      }
      if (frame && frame.type === "rpc" && "success" in frame) {
        const call = this._calls.get(frame.id);
        if (!call) return;
        if (!frame.success) {
          this._calls.delete(frame.id);
          call.reject(Object.assign(new Error(frame.error), { cancelled: !!frame.cancelled }));
        } else if (frame.done === false) {
          if (call.onChunk) call.onChunk(frame.result);
        } else {
          this._calls.delete(frame.id);
          call.resolve(frame.result);
        }
        return;
      }
    }
    super._onMessage(data);
  }

  _onClose(info) {
    // Calls in flight were cancelled by the server with the connection.
    for (const [id, call] of this._calls) call.reject(new Error(`connection closed (${info.code})`));
    this._calls.clear();
  }

  /** Replace the shared state (applied locally at once; the agent validates and broadcasts). */
  setState(state) {
    this.state = state;
    this.send(JSON.stringify({ type: "cf_agent_state", state }));
    this.dispatchEvent(new CustomEvent("state", { detail: { state, source: "client" } }));
  }

  /**
   * Call an `@rpc` method. Partial results of a streaming method go to `onChunk`;
   * `signal` (an AbortSignal) cancels the call on the server.
   */
  call(method, args = [], { onChunk, signal } = {}) {
    if (!this.connected) return Promise.reject(new Error("not connected"));
    const id = `rpc-${this._nextId++}`;
    return new Promise((resolve, reject) => {
      this._calls.set(id, { resolve, reject, onChunk });
      this.send(JSON.stringify({ type: "rpc", id, method, args }));
      if (signal) {
        signal.addEventListener("abort", () => {
          if (this._calls.has(id) && this.connected) this.send(JSON.stringify({ type: "rpc", id, cancel: true }));
        });
      }
    });
  }
}

/**
 * A small UAMP chat client: `new UampChat({agent: "assistant"})`, then
 * `await chat.send("hi", {onDelta: (text) => ...})` resolves with the whole answer.
 * The conversation is kept here too, so after a reconnect the new session continues it.
 */
export class UampChat extends ReconnectingSocket {
  constructor(o = {}) {
    const path = o.agent ? `/agents/${encodeURIComponent(o.agent)}/uamp` : "/uamp";
    const url = o.url ?? `${wsBase(o.host, o.protocol)}${path}`;
    super(async () => withQuery(url, typeof o.query === "function" ? await o.query() : o.query), o);
    this.agent = o.agent ?? null;
    this.sessionId = null;
    this.history = [];
    this.pingInterval = o.pingInterval ?? 30000;
    this.silenceTimeout = o.silenceTimeout ?? 40000;
    this._turn = null;
    this._resend = false;
    this._eventId = 1;
    this._lastSeen = Date.now();
    this._pinger = null;
  }

  _id() {
    return `evt_browser_${this._eventId++}`;
  }

  _onOpen() {
    this.sessionId = null;
    this._lastSeen = Date.now();
    this._resend = this.history.length > 0;
    this._ws.send(JSON.stringify({ type: "session.create", event_id: this._id(), uamp_version: "1.0", session: { modalities: ["text"] } }));
    clearInterval(this._pinger);
    this._pinger = setInterval(() => {
      if (Date.now() - this._lastSeen > this.silenceTimeout) {
        if (this._ws) this._ws.close(3000, "no traffic");
        return;
      }
      if (this.connected) this._ws.send(JSON.stringify({ type: "ping", event_id: this._id() }));
    }, Math.min(this.pingInterval, this.silenceTimeout / 2));
  }

  _onClose(info) {
    clearInterval(this._pinger);
    this.sessionId = null;
    if (this._turn) {
      const turn = this._turn;
      this._turn = null;
      turn.reject(new Error(`connection closed (${info.code}) during the response`));
    }
  }

  _onMessage(data) {
    this._lastSeen = Date.now();
    let ev;
    try {
      ev = JSON.parse(data);
    } catch {
      return;
    }
    const turn = this._turn;
    switch (ev.type) {
      case "session.created":
        this.sessionId = ev.session_id;
        this.dispatchEvent(new CustomEvent("session", { detail: ev }));
        break;
      case "response.created":
        if (turn) turn.responseId = ev.response_id;
        break;
      case "response.delta":
        if (turn && ev.delta && ev.delta.type === "text") {
          turn.text += ev.delta.text;
          if (turn.onDelta) turn.onDelta(ev.delta.text, turn.text);
        }
        break;
      case "response.done":
      case "response.cancelled":
        if (turn) {
          this._turn = null;
          this.history.push({ role: "assistant", content: turn.text });
          turn.resolve(turn.text);
        }
        break;
      case "response.error":
      case "session.error":
        if (turn) {
          this._turn = null;
          turn.reject(new Error(ev.error ? ev.error.message : ev.type));
        }
        break;
    }
    super._onMessage(ev);
  }

  /** Send a user message; resolves with the full answer once the response is done. */
  send(text, { onDelta } = {}) {
    if (this._turn) return Promise.reject(new Error("a response is already running"));
    return new Promise((resolve, reject) => {
      this._turn = { text: "", onDelta, resolve, reject, responseId: null };
      const ev = { type: "input.text", event_id: this._id(), text };
      if (this._resend) {
        ev.messages = [...this.history, { role: "user", content: text }];
        this._resend = false;
      }
      this.history.push({ role: "user", content: text });
      super.send(JSON.stringify(ev));
    });
  }

  /** Cancel the running response (it resolves with what was streamed so far). */
  cancel() {
    if (this._turn && this.connected) this._ws.send(JSON.stringify({ type: "response.cancel", event_id: this._id() }));
  }
}
