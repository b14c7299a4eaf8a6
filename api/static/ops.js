// The ops page: signs in through the public auth API and polls /api/admin/nodes (admins only).
// Renders text only (textContent). A 403 means the account is not an admin: it says so and stops.
"use strict";

(() => {
  const { Api, ApiError } = window.MergeMeet;
  const $ = (id) => document.getElementById(id);
  const EVERY_MS = 2000;
  let timer = null;

  const api = new Api((why) => signedOut(why), "mm.ops.refresh");

  function signedOut(message) {
    clearTimeout(timer);
    $("login-view").hidden = false;
    $("ops-view").hidden = true;
    $("who").hidden = true;
    $("login-error").textContent = message || "";
    setConn("idle", "signed out");
  }

  function setConn(state, text) {
    $("conn").dataset.state = state;
    $("conn-text").textContent = text;
  }

  function fixed(value, digits) {
    return Number(value).toFixed(digits);
  }

  function uptime(seconds) {
    const s = Math.floor(seconds);
    const d = Math.floor(s / 86400);
    const h = Math.floor((s % 86400) / 3600);
    const m = Math.floor((s % 3600) / 60);
    if (d) return `${d}d ${h}h`;
    if (h) return `${h}h ${m}m`;
    return `${m}m ${s % 60}s`;
  }

  function render(view) {
    $("t-nodes").textContent = String(view.totals.nodes);
    $("t-connections").textContent = String(view.totals.connections);
    $("t-users").textContent = String(view.totals.users);
    $("t-rate").textContent = fixed(view.totals.messages_per_s, 1);
    $("t-lag").textContent = fixed(view.totals.delivery_lag_ms_max, 0);
    const body = $("nodes");
    body.replaceChildren();
    for (const node of view.nodes) {
      const tr = document.createElement("tr");
      tr.dataset.node = node.id;
      if (node.heartbeat_age_s > 2 * EVERY_MS / 1000 + 15) tr.className = "stale";
      const cells = [
        node.id,
        node.address,
        uptime(node.uptime_s),
        String(node.connections),
        String(node.users),
        fixed(node.messages_per_s, 1),
        fixed(node.batch_size_avg, 1),
        fixed(node.commit_ms_avg, 2),
        fixed(node.delivery_lag_ms, 0),
        `${fixed(node.heartbeat_age_s, 1)} s ago`,
      ];
      for (const text of cells) {
        const td = document.createElement("td");
        td.textContent = text;
        tr.append(td);
      }
      body.append(tr);
    }
    if (!view.nodes.length) {
      const tr = document.createElement("tr");
      const td = document.createElement("td");
      td.colSpan = 10;
      td.className = "muted";
      td.textContent = "No live realtime node (none has sent a heartbeat recently).";
      tr.append(td);
      body.append(tr);
    }
    $("updated").textContent = new Date(view.time * 1000).toLocaleTimeString();
  }

  async function poll() {
    try {
      render(await api.call("GET", "/api/admin/nodes"));
      setConn("ready", "live");
    } catch (err) {
      if (err instanceof ApiError && err.status === 403) {
        api.clear();
        signedOut("This account is not an admin.");
        return;
      }
      if (err instanceof ApiError && err.status === 401) return; // signedOut already ran
      setConn("reconnecting", `retrying (${err instanceof ApiError ? err.code : "network"})`);
    }
    timer = setTimeout(poll, EVERY_MS);
  }

  async function enter() {
    const me = await api.call("GET", "/api/auth/me");
    $("me-name").textContent = me.email;
    $("login-view").hidden = true;
    $("ops-view").hidden = false;
    $("who").hidden = false;
    $("every").textContent = String(EVERY_MS / 1000);
    await poll();
  }

  $("login-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    $("login-error").textContent = "";
    try {
      await api.login($("email").value.trim(), $("password").value);
      $("password").value = "";
      await enter();
    } catch (err) {
      $("login-error").textContent = err instanceof ApiError ? err.code : `network error: ${err.message}`;
    }
  });

  $("logout").addEventListener("click", async () => {
    clearTimeout(timer);
    await api.logout();
    signedOut("");
  });

  if (api.hasSession) {
    api.refresh().then(enter).catch(() => signedOut(""));
  } else {
    signedOut("");
  }
})();
