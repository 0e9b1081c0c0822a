"use strict";
// The dashboard reads the admin API every two seconds. When the node asks
// for a token, it is asked for once and kept in this browser's storage.
const token = () => localStorage.getItem("vulcan-token") || "";

async function get(path) {
  const r = await fetch(path, { headers: token() ? { Authorization: "Bearer " + token() } : {} });
  if (r.status === 401) {
    const t = prompt("Admin token");
    if (t) localStorage.setItem("vulcan-token", t);
    throw new Error("admin token required");
  }
  if (!r.ok) throw new Error(path + ": " + r.status);
  return r.json();
}

function cell(text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  return td;
}

function fill(tbody, rows) {
  tbody.replaceChildren(...rows.map((cells) => {
    const tr = document.createElement("tr");
    tr.append(...cells);
    return tr;
  }));
}

async function refresh() {
  try {
    const [status, members, services, limits] = await Promise.all([
      get("/v1/status"), get("/v1/members"), get("/v1/services"), get("/v1/limits")]);
    document.getElementById("status").textContent =
      `node ${status.node} · ${status.members} alive · store ${status.store} · version ${status.version}`;
    fill(document.querySelector("#members tbody"),
      members.map((m) => [cell(m.name), cell(m.addr), cell(m.status, m.status)]));
    const box = document.getElementById("services");
    box.replaceChildren(...services.map((s) => {
      const div = document.createElement("div");
      const h = document.createElement("h3");
      h.textContent = `${s.name} (${s.protocol}, ${s.lb}) ${(s.hosts || []).join(" ")} ${s.path_prefix || ""}`;
      const t = document.createElement("table");
      t.innerHTML = "<thead><tr><th>id</th><th>address</th><th>weight</th><th>state</th><th>health</th><th>in flight</th></tr></thead><tbody></tbody>";
      fill(t.querySelector("tbody"), s.upstreams.map((u) => [
        cell(u.id), cell(u.addr), cell(u.weight), cell(u.state, u.state), cell(u.health, u.health), cell(u.in_flight)]));
      div.append(h, t);
      return div;
    }));
    fill(document.querySelector("#limits tbody"), limits.map((l) => [
      cell(l.id), cell(l.auth_token), cell(l.protocol), cell(l.method), cell(l.path),
      cell(l.data_size), cell(l.period + "s"), cell(l.threshold)]));
    document.getElementById("err").textContent = "";
  } catch (e) {
    document.getElementById("err").textContent = e.message;
  }
}

refresh();
setInterval(refresh, 2000);
