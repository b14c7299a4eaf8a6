// MergeMeet reference client: the public REST API and the realtime protocol of docs/PROTOCOL.md.
//
// Owns: tokens (access token in memory only; the refresh token in IndexedDB under this tab's
// session id, kept in sessionStorage, so a reload stays signed in and a duplicated tab shares the
// session under a Web Lock — acceptable for a demo, a real app would use an HttpOnly cookie),
// the socket (auth frame first, never a token in the URL), reconnection with jittered
// exponential backoff then `sync`, the outbox of unacked sends (resent with the same cmid, and
// optionally kept in sessionStorage across a reload), and
// per-conversation message stores deduped and ordered by seq, with gap detection.
// Must not: touch the DOM. The page (demo.js) listens to the events this emits.
"use strict";

const BACKOFF_MIN_MS = 500;
const BACKOFF_MAX_MS = 30000;
const ACK_TIMEOUT_MS = 8000; // no ack by then: the outcome is unknown, resend the same cmid
const PING_EVERY_MS = 10000; // an application ping notices a dead socket browsers keep open
const PONG_TIMEOUT_MS = 5000;
const GAP_WAIT_MS = 1000; // PROTOCOL.md: wait about a second for a missing seq, then sync
const TYPING_REPEAT_MS = 2500;
const TYPING_IDLE_MS = 3000;
// Close codes (PROTOCOL.md): 4100-4199 and 1009 are terminal; 4002/4003 want a fresh token.
const TOKEN_CLOSES = new Set([4002, 4003]);

class ApiError extends Error {
  constructor(status, code, detail) {
    super(detail || code);
    this.status = status;
    this.code = code;
  }
}

/**
 * The refresh tokens of the tabs' sessions, in IndexedDB. Not localStorage: Chromium copies
 * localStorage between renderer processes asynchronously, so a tab taking the refresh lock
 * right after another could still read the token that one just rotated (and reusing it revokes
 * the family). IndexedDB has one backend in the browser: a committed write is what every later
 * transaction of any tab reads.
 */
const tokenStore = {
  db: null,
  open() {
    if (!this.db) {
      this.db = new Promise((resolve, reject) => {
        const request = indexedDB.open("mm-sessions", 1);
        request.onupgradeneeded = () => request.result.createObjectStore("refresh");
        request.onsuccess = () => resolve(request.result);
        request.onerror = () => reject(request.error);
      });
    }
    return this.db;
  },
  async run(mode, fn) {
    const db = await this.open();
    return new Promise((resolve, reject) => {
      const tx = db.transaction("refresh", mode);
      const request = fn(tx.objectStore("refresh"));
      tx.oncomplete = () => resolve(request.result);
      tx.onerror = () => reject(tx.error);
      tx.onabort = () => reject(tx.error);
    });
  },
  get(key) {
    return this.run("readonly", (store) => store.get(key));
  },
  put(key, value) {
    return this.run("readwrite", (store) => store.put(value, key));
  },
  delete(key) {
    return this.run("readwrite", (store) => store.delete(key));
  },
};

class Api {
  // Per-tab sessions: sessionStorage[storageKey] holds this tab's session id (a reload keeps
  // it; "Duplicate tab" copies it, so the copy joins the same session), and the token store
  // that session's current refresh token, shared by every tab of the session. Refresh tokens
  // rotate and a reused one revokes the whole family, so a refresh runs under a Web Lock named
  // by the session and reads the token inside it: tabs take turns, each uses the token the
  // previous one stored, and none ever reuses a rotated token. Two sign-ins in two tabs
  // (Alice here, Bob there) are two sessions that never meet.
  constructor(onSignedOut, storageKey = "mm.refresh") {
    this.access = null;
    this.storageKey = storageKey;
    this.onSignedOut = onSignedOut;
    this.refreshing = null;
  }

  get sid() {
    return sessionStorage.getItem(this.storageKey);
  }

  /** Whether this tab has a session to resume (its refresh token may still have ended). */
  get hasSession() {
    return this.sid !== null;
  }

  get tokenKey() {
    const sid = this.sid;
    return sid ? `${this.storageKey}:${sid}` : null;
  }

  async readRefreshToken() {
    const key = this.tokenKey;
    if (!key) return null;
    const token = await tokenStore.get(key);
    return typeof token === "string" ? token : null;
  }

  /** A new sign-in: a new session id for this tab, then its tokens. */
  async startSession(pair) {
    await this.clear();
    sessionStorage.setItem(this.storageKey, newId("s"));
    await this.setPair(pair);
  }

  async setPair(pair) {
    this.access = pair.access_token;
    if (!this.sid) sessionStorage.setItem(this.storageKey, newId("s"));
    await tokenStore.put(this.tokenKey, pair.refresh_token);
  }

  async clear() {
    this.access = null;
    const key = this.tokenKey;
    sessionStorage.removeItem(this.storageKey);
    if (key) await tokenStore.delete(key).catch(() => {});
  }

  /** Run `fn` holding this session's refresh lock (every tab of the session takes turns). */
  withSessionLock(fn) {
    const key = this.tokenKey;
    if (!key || !navigator.locks) return fn();
    return navigator.locks.request(`${key}:refresh`, fn);
  }

  async raw(method, path, body, token) {
    const headers = { Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (token) headers.Authorization = `Bearer ${token}`;
    const response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "omit",
      cache: "no-store",
    });
    if (response.status === 204) return null;
    const data = await response.json().catch(() => ({}));
    if (!response.ok) {
      throw new ApiError(response.status, data.code || "http_error", String(data.detail || ""));
    }
    return data;
  }

  async login(email, password) {
    await this.startSession(await this.raw("POST", "/api/auth/login", { email, password }));
  }

  async register(email, password) {
    await this.startSession(await this.raw("POST", "/api/auth/register", { email, password }));
  }

  /** One refresh at a time: concurrent callers share it (a reused refresh token revokes all). */
  refresh() {
    if (!this.refreshing) {
      this.refreshing = this.withSessionLock(async () => {
        const token = await this.readRefreshToken(); // inside the lock: the session's newest
        if (!token) throw new ApiError(401, "not_authenticated", "signed out");
        try {
          // Stored before the lock is released, so the next tab's read sees the rotation.
          await this.setPair(await this.raw("POST", "/api/auth/refresh", { refresh_token: token }));
        } catch (err) {
          if (err instanceof ApiError && err.status >= 400 && err.status < 500) {
            await this.clear();
            this.onSignedOut("session ended");
          }
          throw err;
        }
      }).finally(() => {
        this.refreshing = null;
      });
    }
    return this.refreshing;
  }

  /** An authenticated call; an expired access token is refreshed once and the call retried. */
  async call(method, path, body) {
    if (!this.access) await this.refresh();
    try {
      return await this.raw(method, path, body, this.access);
    } catch (err) {
      if (!(err instanceof ApiError) || err.status !== 401) throw err;
      await this.refresh();
      return this.raw(method, path, body, this.access);
    }
  }

  async logout() {
    const token = await this.readRefreshToken().catch(() => null);
    if (token && this.access) {
      await this.raw("POST", "/api/auth/logout", { refresh_token: token }, this.access).catch(
        () => {},
      );
    }
    await this.clear();
  }
}

/** One conversation's messages, deduped and ordered by seq (at-least-once in, once out). */
class Conversation {
  constructor(cid) {
    this.cid = cid;
    this.bySeq = new Map();
    this.held = null; // highest contiguous seq held; null until history is loaded
    this.peerRead = 0; // the other member's read mark (learned from live `read` frames)
    this.myRead = 0;
    this.gapTimer = null;
  }

  /** Store a message; returns true when it is new. */
  add(m) {
    if (this.bySeq.has(m.seq)) return false;
    this.bySeq.set(m.seq, m);
    if (this.held !== null) {
      while (this.bySeq.has(this.held + 1)) this.held += 1;
    }
    return true;
  }

  get head() {
    let top = 0;
    for (const seq of this.bySeq.keys()) top = Math.max(top, seq);
    return top;
  }

  get hasGap() {
    return this.held !== null && this.head > this.held;
  }

  ordered() {
    return [...this.bySeq.values()].sort((a, b) => a.seq - b.seq);
  }
}

function newId(prefix) {
  const bytes = new Uint8Array(12);
  crypto.getRandomValues(bytes);
  return prefix + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function newCmid() {
  return newId("w");
}

/**
 * The realtime session. Events (via `on(name, fn)`): state {state, detail}, ready {frame},
 * message {cid, msg}, outbox {cid}, typing {cid, user, on}, read {cid, user, seq},
 * presence {user, state, last_seen} (answers and pushes), match {cid, user}, gone {cid},
 * error {frame}.
 */
class Realtime {
  /**
   * `outboxKey`: a sessionStorage key that keeps the outbox across a reload of the tab; the
   * reloaded page resends each item with its original cmid, so nothing is stored twice.
   */
  constructor(url, api, outboxKey = null) {
    this.url = url;
    this.api = api;
    this.me = null;
    this.ws = null;
    this.state = "idle";
    this.attempt = 0;
    this.reconnectTimer = null;
    this.pingTimer = null;
    this.pongDeadline = null;
    this.stopped = false;
    this.conversations = new Map();
    this.outbox = new Map(); // cmid -> {cid, cmid, body, sentAt, state: pending|failed, error}
    this.outboxKey = outboxKey;
    this.loadOutbox();
    this.handlers = new Map();
    this.typingSent = new Map(); // cid -> {at, timer}
    this.ridCounter = 0;
    this.syncing = false;
    this.pendingSync = null;
    this.onOnline = () => this.reconnectNow();
    this.onOffline = () => this.dropSocket("the browser went offline");
    window.addEventListener("online", this.onOnline);
    window.addEventListener("offline", this.onOffline);
  }

  on(name, fn) {
    if (!this.handlers.has(name)) this.handlers.set(name, []);
    this.handlers.get(name).push(fn);
  }

  emit(name, detail) {
    if (name === "outbox") this.saveOutbox(); // every outbox change is announced this way
    for (const fn of this.handlers.get(name) || []) fn(detail);
  }

  loadOutbox() {
    if (!this.outboxKey) return;
    let saved = [];
    try {
      saved = JSON.parse(sessionStorage.getItem(this.outboxKey) || "[]");
    } catch (err) {
      saved = [];
    }
    for (const item of Array.isArray(saved) ? saved : []) {
      if (!item || typeof item.cmid !== "string" || typeof item.body !== "string") continue;
      const state = item.state === "failed" ? "failed" : "pending";
      this.outbox.set(item.cmid, {
        cid: Number(item.cid),
        cmid: item.cmid,
        body: item.body,
        sentAt: 0, // unknown outcome: resent after the first sync, with the same cmid
        state,
        note: String(item.note || ""),
      });
    }
  }

  saveOutbox() {
    if (!this.outboxKey) return;
    const items = [...this.outbox.values()].map(({ cid, cmid, body, state, note }) => ({
      cid,
      cmid,
      body,
      state,
      note,
    }));
    if (items.length) sessionStorage.setItem(this.outboxKey, JSON.stringify(items));
    else sessionStorage.removeItem(this.outboxKey);
  }

  /** Forget the saved outbox (sign-out). */
  dropOutbox() {
    this.outbox.clear();
    if (this.outboxKey) sessionStorage.removeItem(this.outboxKey);
  }

  setState(state, detail = "") {
    this.state = state;
    this.emit("state", { state, detail });
  }

  conversation(cid) {
    if (!this.conversations.has(cid)) this.conversations.set(cid, new Conversation(cid));
    return this.conversations.get(cid);
  }

  start() {
    this.stopped = false;
    this.connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.reconnectTimer);
    clearInterval(this.pingTimer);
    window.removeEventListener("online", this.onOnline);
    window.removeEventListener("offline", this.onOffline);
    if (this.ws) this.ws.close(1000, "bye");
    this.ws = null;
    this.setState("stopped");
  }

  connect() {
    if (this.stopped || this.ws) return;
    clearTimeout(this.reconnectTimer);
    if (!navigator.onLine) {
      this.setState("offline", "waiting for the network");
      return;
    }
    this.setState("connecting");
    let ws;
    try {
      ws = new WebSocket(this.url); // the token goes in the first frame, never in the URL
    } catch (err) {
      this.scheduleReconnect(`cannot connect: ${err.message}`);
      return;
    }
    this.ws = ws;
    ws.onopen = async () => {
      if (ws !== this.ws) return;
      try {
        if (!this.api.access) await this.api.refresh();
      } catch (err) {
        ws.close(1000);
        return;
      }
      this.setState("authenticating");
      this.sendFrame({ type: "auth", token: this.api.access }, ws);
    };
    ws.onmessage = (event) => {
      if (ws !== this.ws) return;
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch (err) {
        return;
      }
      this.handle(frame);
    };
    ws.onclose = (event) => {
      if (ws !== this.ws) return;
      this.ws = null;
      clearInterval(this.pingTimer);
      this.onClosed(event.code, event.reason);
    };
  }

  onClosed(code, reason) {
    if (this.stopped) return;
    if (code === 1009 || (code >= 4100 && code <= 4199)) {
      this.setState("closed", `closed by the server (${code} ${reason || ""})`.trim());
      if (code === 4100 || code === 4101 || code === 4103) {
        this.api.clear().catch(() => {});
        this.api.onSignedOut(`signed out by the server (${code})`);
      }
      return;
    }
    if (TOKEN_CLOSES.has(code)) this.api.access = null; // fetch a fresh one before re-auth
    this.scheduleReconnect(`disconnected (${code})`);
  }

  scheduleReconnect(detail) {
    if (this.stopped) return;
    clearTimeout(this.reconnectTimer);
    if (!navigator.onLine) {
      this.setState("offline", "waiting for the network");
      return;
    }
    // Full jitter over an exponential ceiling: 0.5 s doubling to 30 s.
    const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** this.attempt);
    const delay = Math.round(ceiling / 2 + (Math.random() * ceiling) / 2);
    this.attempt += 1;
    this.setState("reconnecting", `${detail}; retry in ${(delay / 1000).toFixed(1)} s`);
    this.reconnectTimer = setTimeout(() => this.connect(), delay);
  }

  reconnectNow() {
    this.attempt = 0;
    if (!this.ws) this.connect();
  }

  /** Close the socket from this side (offline, dead socket); reconnection follows. */
  dropSocket(detail) {
    const ws = this.ws;
    if (!ws) return;
    this.ws = null;
    clearInterval(this.pingTimer);
    try {
      ws.close(4000, "client reconnect");
    } catch (err) {
      /* already closing */
    }
    this.setState(navigator.onLine ? "reconnecting" : "offline", detail);
    this.scheduleReconnect(detail);
  }

  sendFrame(frame, ws = this.ws) {
    if (!ws || ws.readyState !== WebSocket.OPEN) return false;
    ws.send(JSON.stringify(frame));
    return true;
  }

  handle(frame) {
    switch (frame.type) {
      case "ready":
        return this.onReady(frame);
      case "ack":
        return this.onAck(frame);
      case "msg":
        return this.onMsg(frame, true);
      case "sync":
        return this.onSyncPage(frame);
      case "read":
        return this.onRead(frame);
      case "typing":
        return this.emit("typing", { cid: frame.cid, user: frame.user, on: frame.on, ttl: frame.ttl_ms });
      case "presence":
        for (const entry of frame.users || []) this.emit("presence", entry);
        return undefined;
      case "match":
        return this.emit("match", { cid: frame.cid, user: frame.user });
      case "deleted":
        return this.onDeleted(frame);
      case "reauth":
        return this.reauth();
      case "pong":
        this.pongDeadline = null;
        return undefined;
      case "error":
        return this.onError(frame);
      default:
        return undefined; // newer server frames are ignored, as the evolution rule allows
    }
  }

  onReady(frame) {
    const first = this.state !== "ready" && this.state !== "syncing";
    this.me = frame.user;
    this.limits = frame.limits;
    this.emit("ready", { frame });
    if (!first) return; // a re-auth on the same socket: nothing was missed
    this.attempt = 0;
    this.startPing();
    this.setState("syncing", `node ${frame.node}`);
    this.syncNow();
  }

  /** After every (re)connect: sync from the last seq held, page by page, then resend. */
  syncNow(only = null) {
    const convs = {};
    for (const c of this.conversations.values()) {
      if (c.held === null) continue;
      if (only !== null && c.cid !== only) continue;
      convs[String(c.cid)] = c.held;
    }
    this.syncing = true;
    this.sendFrame({ type: "sync", convs, all: false, rid: `sync${++this.ridCounter}` });
  }

  onSyncPage(frame) {
    for (const m of frame.msgs) this.onMsg(m, false);
    for (const cid of frame.gone || []) this.emit("gone", { cid });
    if (!frame.end) {
      this.syncNow();
      return;
    }
    this.syncing = false;
    if (this.state === "syncing") {
      this.setState("ready");
      this.resendOutbox();
    }
  }

  onMsg(m, live) {
    if (m.body === null || m.body === undefined) m = { ...m, body: "" }; // deleted: body is null
    const c = this.conversation(m.cid);
    // My own message from another device, or the ack lost on the way: settle the outbox.
    if (m.sender === this.me && this.outbox.has(m.cmid)) {
      this.outbox.delete(m.cmid);
      this.emit("outbox", { cid: m.cid });
    }
    if (!c.add(m)) return;
    this.emit("message", { cid: m.cid, msg: m, live });
    if (live && c.hasGap && !c.gapTimer) {
      c.gapTimer = setTimeout(() => {
        c.gapTimer = null;
        if (c.hasGap) this.syncNow(c.cid);
      }, GAP_WAIT_MS);
    }
  }

  onAck(frame) {
    const item = this.outbox.get(frame.cmid);
    if (!item) return;
    this.outbox.delete(frame.cmid);
    this.onMsg(
      {
        cid: frame.cid,
        seq: frame.seq,
        id: frame.id,
        sender: this.me,
        cmid: frame.cmid,
        body: item.body,
        kind: "text",
        time: frame.time,
      },
      true,
    );
    this.emit("outbox", { cid: frame.cid });
  }

  onDeleted(frame) {
    const c = this.conversation(frame.cid);
    const m = c.bySeq.get(frame.seq);
    if (!m) return;
    c.bySeq.set(frame.seq, { ...m, body: "", deleted: true });
    this.emit("message", { cid: frame.cid, msg: c.bySeq.get(frame.seq), live: true });
  }

  /** Ask who of `users` is online; answers and later pushes arrive as `presence` events. */
  queryPresence(users) {
    const ids = [...new Set(users)].slice(0, 200);
    if (!ids.length || this.state !== "ready") return;
    this.sendFrame({ type: "presence", users: ids, rid: `presence${++this.ridCounter}` });
  }

  onRead(frame) {
    const c = this.conversation(frame.cid);
    if (frame.user === this.me) c.myRead = Math.max(c.myRead, frame.seq);
    else c.peerRead = Math.max(c.peerRead, frame.seq);
    this.emit("read", { cid: frame.cid, user: frame.user, seq: frame.seq });
  }

  onError(frame) {
    if (frame.rid && frame.rid.startsWith("presence")) return; // presence is best effort
    const item = frame.rid ? this.outbox.get(frame.rid) : null;
    if (item) {
      if (frame.retryable) {
        item.sentAt = 0; // retried by the ack timer's next pass
        item.note = frame.code;
      } else {
        item.state = "failed";
        item.note = frame.code;
      }
      this.emit("outbox", { cid: item.cid });
      return;
    }
    this.emit("error", { frame });
  }

  async reauth() {
    try {
      await this.api.refresh();
      this.sendFrame({ type: "auth", token: this.api.access });
    } catch (err) {
      /* the socket will close with 4002; reconnection fetches a token again */
    }
  }

  startPing() {
    clearInterval(this.pingTimer);
    this.pongDeadline = null;
    this.pingTimer = setInterval(() => {
      const now = Date.now();
      if (this.pongDeadline !== null && now > this.pongDeadline) {
        this.dropSocket("no answer from the server");
        return;
      }
      this.resendDue(now);
      if (this.pongDeadline === null && this.sendFrame({ type: "ping" })) {
        this.pongDeadline = now + PONG_TIMEOUT_MS;
      }
    }, PING_EVERY_MS / 5);
  }

  // -- sending ----------------------------------------------------------------------------------

  send(cid, body) {
    const cmid = newCmid();
    const item = { cid, cmid, body, sentAt: 0, state: "pending", note: "" };
    this.outbox.set(cmid, item);
    this.stopTyping(cid);
    this.transmit(item);
    this.emit("outbox", { cid });
    return cmid;
  }

  transmit(item) {
    if (this.state !== "ready") return; // sent after the next sync
    const frame = { type: "send", cid: item.cid, cmid: item.cmid, body: item.body, rid: item.cmid };
    if (this.sendFrame(frame)) item.sentAt = Date.now();
  }

  resendOutbox() {
    for (const item of this.outbox.values()) {
      if (item.state === "pending") this.transmit(item);
    }
  }

  resendDue(now) {
    if (this.state !== "ready") return;
    for (const item of this.outbox.values()) {
      if (item.state === "pending" && now - item.sentAt > ACK_TIMEOUT_MS) this.transmit(item);
    }
  }

  retry(cmid) {
    const item = this.outbox.get(cmid);
    if (!item) return;
    item.state = "pending";
    item.note = "";
    this.transmit(item);
    this.emit("outbox", { cid: item.cid });
  }

  discard(cmid) {
    const item = this.outbox.get(cmid);
    if (!item) return;
    this.outbox.delete(cmid);
    this.emit("outbox", { cid: item.cid });
  }

  pendingFor(cid) {
    return [...this.outbox.values()].filter((item) => item.cid === cid);
  }

  markRead(cid) {
    const c = this.conversation(cid);
    const top = c.held === null ? c.head : c.held;
    if (top <= c.myRead || this.state !== "ready") return;
    if (this.sendFrame({ type: "read", cid, seq: top })) c.myRead = top;
  }

  typing(cid) {
    const now = Date.now();
    const sent = this.typingSent.get(cid) || { at: 0, timer: null };
    if (now - sent.at > TYPING_REPEAT_MS && this.state === "ready") {
      if (this.sendFrame({ type: "typing", cid, on: true })) sent.at = now;
    }
    clearTimeout(sent.timer);
    sent.timer = setTimeout(() => this.stopTyping(cid), TYPING_IDLE_MS);
    this.typingSent.set(cid, sent);
  }

  stopTyping(cid) {
    const sent = this.typingSent.get(cid);
    if (!sent) return;
    clearTimeout(sent.timer);
    this.typingSent.delete(cid);
    if (sent.at) this.sendFrame({ type: "typing", cid, on: false });
  }
}

window.MergeMeet = { Api, ApiError, Realtime, Conversation };
