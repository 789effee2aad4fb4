// Webhooks: the tenant's subscriptions, a new one (its secret shown once), and each one's
// delivery log with every attempt, redelivery and a ping.
import { api, h, session } from "./api.js";

const $ = (id) => document.getElementById(id);
let wired = false;
let open = null; // the subscription whose log is shown

const when = (iso) => (iso ? iso.replace("T", " ").replace(/\.\d+Z$/, "Z") : "-");

function subscriptionRow(sub, canSubmit) {
  const show = h("button", { type: "button", class: "log", onclick: () => showLog(sub.id) }, "delivery log");
  const ping = canSubmit ? h("button", { type: "button", class: "ping", onclick: () => act(`/v1/webhooks/${sub.id}/ping`, sub.id) }, "ping") : null;
  return h("tr", { "data-subscription": sub.id },
    h("td", { class: "url" }, sub.url), h("td", {}, sub.events.join(", ")),
    h("td", {}, sub.active ? "active" : "paused"), h("td", {}, `${sub.secret_hint}…`),
    h("td", {}, show, " ", ping));
}

function attempts(delivery) {
  return delivery.attempt_log.map((a) =>
    `#${a.attempt} ${a.status_code ?? a.error ?? "?"} (${a.duration_ms.toFixed(0)} ms)`).join(", ") || "none yet";
}

function deliveryRow(d, subId, canSubmit) {
  const again = canSubmit ? h("button", { type: "button", class: "redeliver",
    onclick: () => act(`/v1/webhooks/${subId}/deliveries/${d.id}/redeliver`, subId) }, "redeliver") : null;
  return h("tr", { "data-delivery": d.id, "data-status": d.status },
    h("td", {}, when(d.created_at)), h("td", {}, d.event_type),
    h("td", { class: "status", title: d.last_error || "" }, d.status),
    h("td", { class: "attempts" }, attempts(d)),
    h("td", {}, d.status === "pending" ? when(d.next_attempt_at) : "-"),
    h("td", {}, d.redelivery_of ? `again of ${d.redelivery_of.slice(0, 12)}` : ""),
    h("td", {}, again));
}

async function showLog(subId) {
  open = subId;
  const page = await api(`/v1/webhooks/${subId}/deliveries?limit=50`);
  const canSubmit = session.me.scope !== "read";
  $("deliveries").hidden = false;
  $("deliveries-of").textContent = subId;
  $("deliveries-table").tBodies[0].replaceChildren(...page.items.map((d) => deliveryRow(d, subId, canSubmit)));
  $("deliveries").dataset.ready = subId;
}

async function act(path, subId) {
  try {
    await api(path, { method: "POST" });
    await showLog(subId);
  } catch (err) {
    $("webhooks-error").textContent = err.message;
  }
}

async function load() {
  const list = await api("/v1/webhooks");
  const canSubmit = session.me.scope !== "read";
  $("webhooks-table").tBodies[0].replaceChildren(...list.items.map((s) => subscriptionRow(s, canSubmit)));
  if (open) await showLog(open);
}

async function create(ev) {
  ev.preventDefault();
  const events = [...document.querySelectorAll("#webhook-form input[name=event]:checked")].map((i) => i.value);
  try {
    const made = await api("/v1/webhooks", { method: "POST", body: { url: $("webhook-url").value.trim(), events } });
    $("webhook-error").textContent = "";
    $("webhook-secret").hidden = false;
    $("webhook-secret-value").textContent = made.secret; // shown this once: the API never repeats it
    $("webhook-form").reset();
    await load();
  } catch (err) {
    $("webhook-error").textContent = err.message;
  }
}

export async function showWebhooks() {
  if (!wired) {
    wired = true;
    $("webhook-form").addEventListener("submit", create);
  }
  $("webhook-form").hidden = session.me.scope === "read";
  $("webhooks-error").textContent = "";
  try { await load(); } catch (err) { $("webhooks-error").textContent = err.message; }
  $("view-webhooks").dataset.ready = "true";
}
