// The demo chat page: sign-in, matches, one open conversation. All protocol and token work is
// in client.js; this file only renders what it reports and forwards what the user does.
// Message bodies and names are always inserted as text (textContent), never as HTML.
"use strict";

(() => {
  const { Api, ApiError, Realtime } = window.MergeMeet;
  const $ = (id) => document.getElementById(id);
  const DEMO_PASSWORD = "demo-password-1";
  const HISTORY_LIMIT = 50;

  let api = null;
  let rt = null;
  let me = null; // /api/auth/me
  let registering = false;
  let openCid = null;
  const matches = new Map(); // cid -> match item from /api/matches
  const peers = new Map(); // user id -> {name, state: online|offline|unknown, lastSeen}
  const typingTimers = new Map(); // cid -> timeout

  // -- sign-in ----------------------------------------------------------------------------------

  function showLogin(message = "") {
    $("login-view").hidden = false;
    $("chat-view").hidden = true;
    $("who").hidden = true;
    $("login-error").textContent = message;
    setConn("idle", "not connected");
  }

  function setRegistering(on) {
    registering = on;
    $("register-fields").hidden = !on;
    $("register-fields").disabled = !on;
    $("login-title").textContent = on ? "Create an account" : "Sign in";
    $("login-submit").textContent = on ? "Register" : "Sign in";
    $("toggle-register").textContent = on ? "Have an account? Sign in" : "No account? Register";
  }

  $("toggle-register").addEventListener("click", (event) => {
    event.preventDefault();
    setRegistering(!registering);
  });

  $("demo-users").addEventListener("click", (event) => {
    const name = event.target.dataset && event.target.dataset.user;
    if (!name) return;
    setRegistering(false);
    $("email").value = `${name}@demo.mergemeet.dev`;
    $("password").value = DEMO_PASSWORD;
    $("login-form").requestSubmit();
  });

  $("login-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    $("login-error").textContent = "";
    $("login-submit").disabled = true;
    const email = $("email").value.trim();
    const password = $("password").value;
    try {
      if (registering) {
        await api.raw("POST", "/api/auth/register", {
          email,
          password,
          display_name: $("display-name").value.trim(),
          birth_date: $("birth-date").value,
          gender: $("gender").value,
        }).then((pair) => api.startSession(pair));
      } else {
        await api.login(email, password);
      }
      $("password").value = "";
      await enter();
    } catch (err) {
      $("login-error").textContent = describe(err);
    } finally {
      $("login-submit").disabled = false;
    }
  });

  $("logout").addEventListener("click", async () => {
    if (rt) rt.dropOutbox();
    if (rt) rt.stop();
    rt = null;
    await api.logout();
    location.reload();
  });

  function describe(err) {
    if (err instanceof ApiError) {
      const detail = typeof err.message === "string" ? err.message : "";
      return `${err.code}${detail && detail !== err.code ? `: ${detail}` : ""}`;
    }
    return `network error: ${err.message}`;
  }

  // -- after sign-in ----------------------------------------------------------------------------

  async function enter() {
    me = await api.call("GET", "/api/auth/me");
    const config = await api.raw("GET", "/web/config");
    $("login-view").hidden = true;
    $("chat-view").hidden = false;
    $("who").hidden = false;
    $("me-name").textContent = me.email;
    document.title = `MergeMeet · ${me.email}`;
    // The outbox is this tab's and this account's: a reload resends it with the same cmids.
    rt = new Realtime(config.realtime_url, api, `mm.demo.outbox:${me.id}`);
    rt.on("state", ({ state, detail }) => {
      setConn(state, detail);
      onConnection(state);
    });
    rt.on("message", onMessage);
    rt.on("outbox", ({ cid }) => cid === openCid && renderMessages());
    rt.on("typing", onTyping);
    rt.on("read", ({ cid }) => cid === openCid && renderMessages());
    rt.on("presence", onPresence);
    rt.on("match", () => loadMatches().catch(() => {}));
    rt.on("gone", ({ cid }) => {
      matches.delete(cid);
      renderMatches();
    });
    await loadMatches();
    rt.start();
  }

  function setConn(state, detail) {
    const labels = {
      idle: "not connected",
      connecting: "connecting…",
      authenticating: "signing in…",
      syncing: "syncing…",
      ready: "live",
      reconnecting: "reconnecting",
      offline: "offline",
      closed: "closed",
      stopped: "stopped",
    };
    $("conn").dataset.state = state;
    $("conn-text").textContent = labels[state] || state;
    $("conn").title = detail || labels[state] || state;
  }

  async function loadMatches() {
    const page = await api.call("GET", "/api/matches?limit=100");
    matches.clear();
    for (const item of page.items) {
      matches.set(item.conversation_id, item);
      const peer = peers.get(item.user.user_id) || { state: "unknown", lastSeen: 0 };
      peers.set(item.user.user_id, { ...peer, name: item.user.display_name });
    }
    renderMatches();
    if (rt && rt.state === "ready") rt.queryPresence(page.items.map((item) => item.user.user_id));
    const first = page.items[0];
    if (first && openCid === null) await openConversation(first.conversation_id);
  }

  function initials(name) {
    return (name || "?").trim().slice(0, 1).toUpperCase();
  }

  function renderMatches() {
    const list = $("matches");
    list.replaceChildren();
    $("no-matches").hidden = matches.size > 0;
    for (const [cid, item] of matches) {
      const li = document.createElement("li");
      li.className = "match" + (cid === openCid ? " active" : "");
      li.dataset.cid = String(cid);
      const avatar = document.createElement("span");
      avatar.className = "avatar";
      avatar.textContent = initials(item.user.display_name);
      const dot = document.createElement("span");
      const peer = peers.get(item.user.user_id);
      dot.className = "presence " + presenceClass(peer);
      li.dataset.presence = presenceClass(peer);
      avatar.append(dot);
      const text = document.createElement("div");
      text.className = "match-text";
      const name = document.createElement("div");
      name.className = "match-name";
      name.textContent = `${item.user.display_name}, ${item.user.age}`;
      const preview = document.createElement("div");
      preview.className = "match-preview muted small";
      const last = lastMessage(cid, item);
      preview.textContent = last || "Say hi!";
      text.append(name, preview);
      li.append(avatar, text);
      if (item.unread_count > 0 && cid !== openCid) {
        const badge = document.createElement("span");
        badge.className = "badge";
        badge.textContent = String(item.unread_count);
        li.append(badge);
      }
      li.addEventListener("click", () => openConversation(cid));
      list.append(li);
    }
  }

  function lastMessage(cid, item) {
    const c = rt && rt.conversations.get(cid);
    if (c && c.bySeq.size) {
      const m = c.ordered().at(-1);
      return m.deleted ? "(deleted)" : m.body;
    }
    if (item.last_message) return item.last_message.deleted ? "(deleted)" : item.last_message.body;
    return "";
  }

  function presenceClass(peer) {
    if (!peer || peer.state === "unknown") return "unknown";
    return peer.state === "online" ? "online" : "away";
  }

  async function openConversation(cid) {
    openCid = cid;
    const item = matches.get(cid);
    if (item) item.unread_count = 0;
    $("peer-name").textContent = item ? item.user.display_name : `Conversation ${cid}`;
    $("peer-avatar").textContent = item ? initials(item.user.display_name) : "?";
    $("draft").disabled = false;
    $("send").disabled = false;
    $("typing").hidden = true;
    renderPeerStatus();
    renderMatches();
    const c = rt.conversation(cid);
    if (c.held === null) {
      const page = await api.call("GET", `/api/conversations/${cid}/messages?limit=${HISTORY_LIMIT}`);
      addHistory(c, page);
      // The page is the newest at query time: everything up to its top is held from here on.
      c.held = page.messages.length ? page.messages.at(-1).seq : 0;
      c.moreBefore = page.has_more; // older pages are fetched on scrolling to the top
      while (c.bySeq.has(c.held + 1)) c.held += 1;
      if (rt.state === "ready" || rt.state === "syncing") rt.syncNow(cid); // committed since the page
    }
    renderMessages();
    rt.markRead(cid);
    $("draft").focus();
  }

  function addHistory(c, page) {
    for (const m of page.messages) {
      c.add({
        cid: c.cid,
        seq: m.seq,
        id: m.id,
        sender: m.sender_id,
        cmid: m.cmid,
        body: m.body || "",
        kind: m.kind,
        time: Date.parse(m.created_at),
        deleted: m.deleted,
      });
    }
  }

  // -- scroll-back: older pages by REST, before the lowest seq shown ------------------------------

  let loadingEarlier = false;

  async function loadEarlier() {
    if (openCid === null || loadingEarlier) return;
    const cid = openCid;
    const c = rt.conversation(cid);
    if (!c.moreBefore || !c.bySeq.size) return;
    loadingEarlier = true;
    try {
      const lowest = Math.min(...c.bySeq.keys());
      const page = await api.call(
        "GET",
        `/api/conversations/${cid}/messages?before=${lowest}&limit=${HISTORY_LIMIT}`,
      );
      addHistory(c, page);
      c.moreBefore = page.has_more && page.messages.length > 0;
      if (cid !== openCid) return;
      // Keep the message that was at the top where it was on the screen.
      const list = $("messages");
      const fromBottom = list.scrollHeight - list.scrollTop;
      renderMessages({ keepBottomOffset: fromBottom });
    } finally {
      loadingEarlier = false;
    }
  }

  $("messages").addEventListener("scroll", () => {
    if ($("messages").scrollTop < 40) loadEarlier().catch(() => {});
  });

  function renderPeerStatus() {
    const item = matches.get(openCid);
    if (!item) return;
    const peer = peers.get(item.user.user_id);
    const status = presenceClass(peer);
    let text = `age ${item.user.age}`;
    if (status === "online") text = `online · ${text}`;
    else if (status === "away" && peer.lastSeen) text = `last seen ${timeText(peer.lastSeen)} · ${text}`;
    else if (status === "away") text = `offline · ${text}`;
    $("peer-status").textContent = text;
    $("peer-status").dataset.presence = status;
  }

  function timeText(ms) {
    return new Date(ms).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  }

  function renderMessages({ keepBottomOffset = null } = {}) {
    const list = $("messages");
    if (openCid === null) return;
    const c = rt.conversation(openCid);
    const stick = list.scrollTop + list.clientHeight >= list.scrollHeight - 40;
    list.replaceChildren();
    if (c.moreBefore) {
      const more = document.createElement("li");
      more.className = "history-more muted small";
      more.id = "load-earlier";
      const button = document.createElement("button");
      button.type = "button";
      button.className = "link";
      button.textContent = loadingEarlier ? "loading earlier messages…" : "load earlier messages";
      button.addEventListener("click", () => loadEarlier().catch(() => {}));
      more.append(button);
      list.append(more);
    } else if (c.held !== null && c.bySeq.size) {
      const start = document.createElement("li");
      start.className = "history-start muted small";
      start.id = "history-start";
      start.textContent = "the beginning of your conversation";
      list.append(start);
    }
    const ordered = c.ordered();
    let lastMine = null;
    for (const m of ordered) if (m.sender === rt.me) lastMine = m.seq;
    for (const m of ordered) {
      const li = document.createElement("li");
      const mine = m.sender === rt.me;
      li.className = `msg ${mine ? "mine" : "theirs"}${m.deleted ? " deleted" : ""}`;
      li.dataset.seq = String(m.seq);
      li.dataset.cmid = m.cmid;
      const body = document.createElement("div");
      body.className = "body";
      body.textContent = m.deleted ? "message deleted" : m.body;
      const meta = document.createElement("div");
      meta.className = "meta";
      meta.textContent = timeText(m.time);
      if (mine && m.seq === lastMine) {
        const receipt = document.createElement("span");
        const read = c.peerRead >= m.seq;
        receipt.className = `receipt ${read ? "read" : "sent"}`;
        receipt.textContent = read ? "✓✓ Read" : "✓ Sent";
        meta.append(" ", receipt);
      }
      li.append(body, meta);
      list.append(li);
    }
    for (const item of rt.pendingFor(openCid)) {
      const li = document.createElement("li");
      li.className = `msg mine pending ${item.state}`;
      li.dataset.cmid = item.cmid;
      const body = document.createElement("div");
      body.className = "body";
      body.textContent = item.body;
      const meta = document.createElement("div");
      meta.className = "meta";
      if (item.state === "failed") {
        meta.textContent = `not sent (${item.note}) `;
        const retry = document.createElement("button");
        retry.type = "button";
        retry.className = "link";
        retry.textContent = "retry";
        retry.addEventListener("click", () => rt.retry(item.cmid));
        const drop = document.createElement("button");
        drop.type = "button";
        drop.className = "link";
        drop.textContent = "discard";
        drop.addEventListener("click", () => rt.discard(item.cmid));
        meta.append(retry, " ", drop);
      } else {
        meta.textContent = rt.state === "ready" ? "◷ sending…" : "◷ waiting for connection";
      }
      li.append(body, meta);
      list.append(li);
    }
    if (keepBottomOffset !== null) {
      list.scrollTop = list.scrollHeight - keepBottomOffset;
    } else if (stick || ordered.length + rt.pendingFor(openCid).length < 20) {
      list.scrollTop = list.scrollHeight;
    }
  }

  function onMessage({ cid, msg }) {
    const item = matches.get(cid);
    if (cid === openCid) {
      renderMessages();
      if (msg.sender !== rt.me) {
        hideTyping(cid);
        // A receipt means a person could see it: only while this tab is visible.
        if (document.visibilityState === "visible") rt.markRead(cid);
      }
    } else if (item && msg.sender !== rt.me) {
      item.unread_count += 1;
    }
    if (item) renderMatches();
    else if (!matches.has(cid)) loadMatches().catch(() => {}); // a new match
  }

  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible" && openCid !== null && rt) rt.markRead(openCid);
  });

  function onTyping({ cid, user, on, ttl }) {
    if (user === rt.me) return;
    if (!on) {
      hideTyping(cid);
      return;
    }
    clearTimeout(typingTimers.get(cid));
    typingTimers.set(
      cid,
      setTimeout(() => hideTyping(cid), ttl || 5000),
    );
    if (cid === openCid) {
      const peer = peers.get(user);
      $("typing-text").textContent = `${peer && peer.name ? peer.name : "They"} is typing…`;
      $("typing").hidden = false;
    }
  }

  function hideTyping(cid) {
    clearTimeout(typingTimers.get(cid));
    typingTimers.delete(cid);
    if (cid === openCid) $("typing").hidden = true;
  }

  function onPresence({ user, state, last_seen: lastSeen }) {
    const peer = peers.get(user);
    if (!peer) return; // only people we chat with are shown
    peers.set(user, { ...peer, state, lastSeen: lastSeen || 0 });
    renderMatches();
    renderPeerStatus();
  }

  function onConnection(state) {
    if (state === "ready") {
      // Pushes are never replayed: after every (re)connect, ask.
      rt.queryPresence([...matches.values()].map((item) => item.user.user_id));
      if (openCid !== null) renderMessages(); // pending items now say "sending…"
      return;
    }
    if (state === "syncing" || state === "authenticating") return;
    // Disconnected: what we knew about others may no longer be true.
    for (const [user, peer] of peers) peers.set(user, { ...peer, state: "unknown" });
    for (const cid of [...typingTimers.keys()]) hideTyping(cid);
    renderMatches();
    renderPeerStatus();
    if (openCid !== null) renderMessages();
  }

  $("draft").addEventListener("input", () => {
    if (openCid !== null && $("draft").value) rt.typing(openCid);
  });

  $("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    const body = $("draft").value.trim();
    if (!body || openCid === null) return;
    rt.send(openCid, body);
    $("draft").value = "";
  });

  // -- boot -------------------------------------------------------------------------------------

  api = new Api((why) => {
    if (rt) rt.stop();
    rt = null;
    showLogin(why);
  }, "mm.demo.refresh");
  if (api.hasSession) {
    api
      .refresh()
      .then(enter)
      .catch((err) => showLogin(err instanceof ApiError ? "" : describe(err)));
  } else {
    showLogin();
  }
})();
