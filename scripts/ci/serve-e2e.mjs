// End-to-end test of `myriad serve` in headless Chromium:
//  1. a static page served by an http service opens a WebSocket on a
//     second path of the same port (/echo) and shows the echo;
//  2. the chat demo page on /chat, in two pages: each shows it is
//     connected, its name and the member count, and a message typed in
//     one appears in the other with its sender's name;
//  3. the live dashboard on the metrics listener draws its charts from
//     /metrics and lists the service.
// usage: node serve-e2e.mjs http://HOST:PORT http://HOST:METRICS_PORT USER_DATA_DIR
import { chromium } from "playwright-core";

const [base, metrics, userDataDir] = process.argv.slice(2);
if (!base || !metrics || !userDataDir) {
  console.error("usage: node serve-e2e.mjs BASE_URL METRICS_URL USER_DATA_DIR");
  process.exit(2);
}
const TIMEOUT = 15000;
const options = {
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  timeout: 120000,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
};
let ctx;
for (let attempt = 1; ; attempt++) {
  try {
    ctx = await chromium.launchPersistentContext(userDataDir, options);
    break;
  } catch (e) {
    if (attempt >= 2) throw e;
    console.error(`serve-e2e: launching chromium failed (${String(e).split("\n")[0]}), retrying`);
  }
}
const errors = [];
const page = async () => {
  const p = await ctx.newPage();
  // (the browser's own /favicon.ico request is answered 404: not an error
  // of the page; failed loads are checked by their responses instead)
  p.on("console", (m) => {
    console.log(`[page console] ${m.text()}`);
    if (m.type() === "error" && !m.text().startsWith("Failed to load resource")) errors.push(m.text());
  });
  p.on("response", (r) => {
    if (r.status() >= 400 && !r.url().endsWith("/favicon.ico")) errors.push(`${r.status()} ${r.url()}`);
  });
  p.on("pageerror", (e) => errors.push(String(e)));
  return p;
};
const text = (p, sel) => p.$eval(sel, (e) => e.textContent);

let failed = false;
try {
  // 1. static page + WebSocket on another path of the same port
  const s = await page();
  await s.goto(`${base}/static/index.html`, { timeout: TIMEOUT });
  await s.waitForFunction(() => document.getElementById("out").textContent === "echo: hello over /echo",
    null, { timeout: TIMEOUT });
  console.log("serve-e2e: static page opened ws on /echo and got its echo");

  // 2. the chat page
  const a = await page(), b = await page();
  await a.goto(`${base}/chat?name=Alice`, { timeout: TIMEOUT });
  await a.waitForFunction(() => document.getElementById("state").textContent === "connected", null, { timeout: TIMEOUT });
  await a.waitForFunction(() => document.getElementById("who").textContent.includes("you are Alice"), null, { timeout: TIMEOUT });
  await b.goto(`${base}/chat`, { timeout: TIMEOUT });
  await b.waitForFunction(() => /you are guest-\d+ · 2 members/.test(document.getElementById("who").textContent),
    null, { timeout: TIMEOUT });
  await a.waitForFunction(() => document.getElementById("who").textContent === "you are Alice · 2 members",
    null, { timeout: TIMEOUT });
  console.log(`serve-e2e: chat pages show "${await text(a, "#who")}" and "${await text(b, "#who")}"`);
  const nonce = Math.random().toString(36).slice(2);
  await a.fill("#msg", `hello ${nonce}`);
  await a.press("#msg", "Enter");
  for (const p of [a, b]) {
    await p.waitForFunction((t) => [...document.querySelectorAll("#log div")].some((d) => d.textContent === t),
      `Alicehello ${nonce}`, { timeout: TIMEOUT });
  }
  console.log("serve-e2e: a message from Alice arrived in both pages with her name");
  await b.close();
  await a.waitForFunction(() => document.getElementById("who").textContent === "you are Alice · 1 member",
    null, { timeout: TIMEOUT });
  console.log("serve-e2e: the member count followed a page closing");

  // 3. the dashboard (two scrapes make the first rates)
  const d = await page();
  await d.goto(`${metrics}/`, { timeout: TIMEOUT });
  await d.waitForFunction(() => /^live · \d+ service/.test(document.getElementById("status").textContent),
    null, { timeout: TIMEOUT });
  await d.waitForFunction(() => document.querySelectorAll("#now tr").length >= 2, null, { timeout: TIMEOUT });
  const rows = await d.$$eval("#now td:first-child", (tds) => tds.map((t) => t.textContent));
  if (!rows.includes("web")) throw new Error(`dashboard rows ${rows}`);
  const drawn = await d.$eval("#open", (c) => {
    const g = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
    let n = 0;
    for (let i = 3; i < g.length; i += 4) if (g[i]) n++;
    return n;
  });
  if (drawn < 100) throw new Error(`the open-connections chart is empty (${drawn} pixels)`);
  console.log(`serve-e2e: dashboard live with services ${rows.join(", ")}; chart drawn`);
  if (errors.length) throw new Error(`page errors: ${errors.join(" | ")}`);
} catch (e) {
  console.error(`serve-e2e: FAILED: ${e}`);
  failed = true;
} finally {
  await ctx.close();
}
process.exit(failed ? 1 : 0);
