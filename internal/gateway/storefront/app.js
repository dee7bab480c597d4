// Shop's storefront: plain JavaScript over the gateway's own REST routes
// (the same ones /openapi.json describes). No build step, no library.
//
// Reading your own writes: a command's reply carries a consistency token
// (aggregate id and version); the next query passes it with a wait budget,
// so the read model answers once it has that version. Watching an order go
// from PENDING to CONFIRMED is one such wait for the order's next version,
// not a polling loop.
"use strict";

const $ = (id) => document.getElementById(id);
const session = {
  get token() { return sessionStorage.getItem("shop.token"); },
  get userId() { return sessionStorage.getItem("shop.userId"); },
  get role() { return sessionStorage.getItem("shop.role"); },
  get email() { return sessionStorage.getItem("shop.email"); },
  set(t) {
    for (const [k, v] of Object.entries(t)) sessionStorage.setItem("shop." + k, v);
  },
  clear() { sessionStorage.clear(); },
};

let products = [];

function say(text, isError) {
  const m = $("message");
  m.textContent = text;
  m.className = isError ? "error" : "info";
}

function newKey() {
  if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
  return Date.now().toString(36) + Math.random().toString(36).slice(2);
}

// One call to the gateway. Commands (POST/PATCH) get a fresh idempotency
// key unless one is given. Throws an Error with the server's message.
async function api(method, path, body, opts = {}) {
  const headers = { "Accept": "application/json" };
  if (session.token) headers["Authorization"] = "Bearer " + session.token;
  if (method !== "GET") headers["Idempotency-Key"] = opts.key || newKey();
  if (opts.timeout) headers["X-Request-Timeout"] = opts.timeout;
  const init = { method, headers };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const resp = await fetch(path, init);
  const data = await resp.json().catch(() => ({}));
  if (!resp.ok) {
    const e = data.error || {};
    const err = new Error(e.message || resp.statusText);
    err.status = resp.status;
    err.code = e.status;
    throw err;
  }
  return data;
}

function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== "") q.set(k, v);
  const s = q.toString();
  return s ? "?" + s : "";
}

function money(m) {
  if (!m) return "";
  const units = Number(m.units || 0);
  return (units / 100).toFixed(2) + " " + (m.currency || "");
}

function when(ts) {
  if (!ts || !ts.seconds) return "";
  return new Date(Number(ts.seconds) * 1000).toLocaleString();
}

function cell(tr, text) {
  const td = document.createElement("td");
  td.textContent = text;
  tr.appendChild(td);
  return td;
}

// ---- catalog ----------------------------------------------------------------

async function loadProducts(consistency) {
  const params = { text: $("search").value.trim(), "page.pageSize": 50 };
  if (consistency) {
    params["consistency.token.aggregateId"] = consistency.aggregateId;
    params["consistency.token.version"] = consistency.version;
    params["consistency.waitMs"] = 5000;
  }
  const r = await api("GET", "/v1/products" + query(params));
  products = r.products || [];
  const tbody = $("products");
  tbody.replaceChildren();
  for (const p of products) {
    const tr = document.createElement("tr");
    tr.className = "product";
    tr.dataset.id = p.productId;
    tr.dataset.sku = p.sku;
    cell(tr, (p.details && p.details.name) || p.sku);
    cell(tr, (p.details && p.details.category) || "");
    cell(tr, money(p.price));
    cell(tr, (p.stock && p.stock.available) || "0");
    const td = cell(tr, "");
    const qty = document.createElement("input");
    qty.type = "number";
    qty.min = "0";
    qty.value = "0";
    qty.className = "qty";
    qty.setAttribute("aria-label", "quantity of " + p.sku);
    td.appendChild(qty);
    tbody.appendChild(tr);
  }
  const sel = $("restock-product");
  sel.replaceChildren();
  for (const p of products) {
    const o = document.createElement("option");
    o.value = p.productId;
    o.textContent = p.sku + " (" + ((p.details && p.details.name) || "") + ")";
    sel.appendChild(o);
  }
  say(products.length + " product(s)");
}

// ---- session ----------------------------------------------------------------

function showSession() {
  const logged = !!session.token;
  $("whoami").textContent = logged ? session.email + " (" + session.role + ")" : "not logged in";
  $("logout").hidden = !logged;
  $("login-panel").hidden = logged;
  $("checkout").hidden = !logged;
  $("orders-panel").hidden = !logged;
  $("admin").hidden = !(logged && session.role === "ROLE_ADMIN");
}

async function login(email, password) {
  const r = await api("POST", "/v1/auth:login", { email, password });
  session.set({
    token: r.tokens.accessToken,
    refresh: r.tokens.refreshToken,
    userId: r.userId,
    role: r.role,
    email,
  });
  showSession();
  say("Logged in as " + email);
  await loadOrders();
}

// ---- orders -----------------------------------------------------------------

// Reads the order at least at version, waiting up to waitMs for the read
// model to get there. Returns null when it did not in time (412).
async function orderAt(id, version, waitMs) {
  try {
    const r = await api("GET", "/v1/orders/" + encodeURIComponent(id) + query({
      "consistency.token.aggregateId": id,
      "consistency.token.version": version,
      "consistency.waitMs": waitMs,
    }), undefined, { timeout: (waitMs + 2000) + "m" });
    return r.order;
  } catch (e) {
    if (e.status === 412) return null;
    throw e;
  }
}

function showOrder(o) {
  $("order-result").hidden = false;
  $("order-id").textContent = o.orderId;
  $("order-status").textContent = o.status.replace("ORDER_STATUS_", "");
  $("order-total").textContent = "Total " + money(o.total) +
    (o.cancelReasonText ? " - " + o.cancelReasonText : "");
}

async function placeOrder() {
  const lines = [];
  for (const tr of document.querySelectorAll("#products tr.product")) {
    const q = Number(tr.querySelector(".qty").value);
    if (q > 0) lines.push({ productId: tr.dataset.id, quantity: q });
  }
  if (lines.length === 0) {
    say("Choose a quantity of at least one product first", true);
    return;
  }
  const created = await api("POST", "/v1/orders", {
    lines,
    paymentToken: $("payment-token").value,
    shippingAddress: {
      recipient: $("ship-recipient").value,
      line1: $("ship-line1").value,
      city: $("ship-city").value,
      postalCode: $("ship-postal").value,
      country: $("ship-country").value,
    },
  });
  const id = created.orderId;
  let version = Number(created.consistency.version);
  // Our own write, readable at once.
  let o = await orderAt(id, version, 5000);
  if (o) showOrder(o);
  say("Order placed; waiting for payment and stock");
  // The next version is the saga's answer (CONFIRMED or CANCELLED). Each
  // wait returns as soon as the read model has it.
  for (let tries = 0; o && o.status === "ORDER_STATUS_PENDING" && tries < 3; tries++) {
    const next = await orderAt(id, Number(o.version) + 1, 15000);
    if (next) o = next;
  }
  if (o) showOrder(o);
  say("Order " + id + " is " + (o ? o.status.replace("ORDER_STATUS_", "") : "still PENDING"));
  await loadOrders({ aggregateId: id, version: o ? o.version : version });
  await loadProducts();
}

async function loadOrders(consistency) {
  if (!session.userId) return;
  const params = { "page.pageSize": 20 };
  if (consistency) {
    params["consistency.token.aggregateId"] = consistency.aggregateId;
    params["consistency.token.version"] = consistency.version;
    params["consistency.waitMs"] = 5000;
  }
  const r = await api("GET", "/v1/customers/" + encodeURIComponent(session.userId) + "/orders" +
    query(params));
  const tbody = $("orders");
  tbody.replaceChildren();
  for (const o of r.orders || []) {
    const tr = document.createElement("tr");
    tr.className = "order";
    tr.dataset.id = o.orderId;
    cell(tr, o.orderId.slice(0, 8));
    cell(tr, when(o.createdAt));
    cell(tr, money(o.total));
    const st = cell(tr, o.status.replace("ORDER_STATUS_", ""));
    st.className = "status";
    const td = cell(tr, "");
    if (o.status === "ORDER_STATUS_PENDING" || o.status === "ORDER_STATUS_CONFIRMED") {
      const b = document.createElement("button");
      b.type = "button";
      b.className = "cancel";
      b.textContent = "Cancel";
      b.addEventListener("click", () => run(() => cancelOrder(o.orderId)));
      td.appendChild(b);
    }
    tbody.appendChild(tr);
  }
}

async function cancelOrder(id) {
  const r = await api("POST", "/v1/orders/" + encodeURIComponent(id) + ":cancel",
    { reason: "cancelled in the storefront" });
  if ($("order-id").textContent === id)
    $("order-status").textContent = r.status.replace("ORDER_STATUS_", "");
  say("Order " + id + " cancelled");
  await loadOrders(r.consistency);
}

// ---- admin ------------------------------------------------------------------

async function createProduct() {
  const r = await api("POST", "/v1/products", {
    sku: $("new-sku").value,
    details: {
      name: $("new-name").value,
      description: $("new-description").value,
      category: $("new-category").value,
    },
    price: { units: $("new-price").value, currency: $("new-currency").value },
    initialStock: $("new-stock").value,
  });
  say("Product " + $("new-sku").value + " created");
  await loadProducts(r.consistency);
}

async function restock() {
  const id = $("restock-product").value;
  const r = await api("POST", "/v1/products/" + encodeURIComponent(id) + ":restock", {
    quantity: $("restock-quantity").value,
    reference: "storefront",
  });
  await loadProducts(r.consistency);
  // The stock shown comes from the inventory worker's count, which follows
  // the restock itself by a moment: Search again to see it.
  say("Restocked by " + $("restock-quantity").value +
    "; the stock shown follows once the inventory has counted it");
}

async function listStuck() {
  const r = await api("GET", "/v1/orders:stuck" + query({
    olderThanSeconds: $("stuck-age").value,
    "page.pageSize": 50,
  }));
  const tbody = $("stuck");
  tbody.replaceChildren();
  for (const o of r.orders || []) {
    const tr = document.createElement("tr");
    tr.className = "stuck-order";
    cell(tr, o.orderId);
    cell(tr, o.customerId);
    cell(tr, o.status.replace("ORDER_STATUS_", ""));
    cell(tr, when(o.deadline));
    tbody.appendChild(tr);
  }
  say((r.orders || []).length + " stuck order(s)");
}

// ---- wiring -----------------------------------------------------------------

// Runs an action, showing its error instead of losing it.
async function run(fn) {
  try {
    await fn();
  } catch (e) {
    say(e.message + (e.code ? " (" + e.code + ")" : ""), true);
  }
}

function onSubmit(id, fn) {
  $(id).addEventListener("submit", (ev) => {
    ev.preventDefault();
    run(fn);
  });
}

document.addEventListener("DOMContentLoaded", () => {
  onSubmit("search-form", () => loadProducts());
  onSubmit("login-form", () => login($("login-email").value, $("login-password").value));
  onSubmit("register-form", async () => {
    await api("POST", "/v1/users", {
      name: $("register-name").value,
      email: $("register-email").value,
      password: $("register-password").value,
    });
    await login($("register-email").value, $("register-password").value);
  });
  onSubmit("order-form", placeOrder);
  onSubmit("create-product-form", createProduct);
  onSubmit("restock-form", restock);
  onSubmit("stuck-form", listStuck);
  $("orders-refresh").addEventListener("click", () => run(() => loadOrders()));
  $("logout").addEventListener("click", () => run(async () => {
    try {
      await api("POST", "/v1/auth:logout", { refreshToken: sessionStorage.getItem("shop.refresh") });
    } finally {
      session.clear();
      $("order-result").hidden = true;
      $("orders").replaceChildren();
      showSession();
    }
    say("Logged out");
  }));
  showSession();
  run(async () => {
    await loadProducts();
    if (session.token) await loadOrders();
  });
});
