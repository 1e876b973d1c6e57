// End-to-end test of the ws_chat example in headless Chromium: two pages
// open the chat page, and a message typed in one must appear in the other
// (both ways). usage: node chat-e2e.mjs http://127.0.0.1:PORT/ USER_DATA_DIR
import { chromium } from "playwright-core";

const [url, userDataDir] = process.argv.slice(2);
if (!url || !userDataDir) {
  console.error("usage: node chat-e2e.mjs URL USER_DATA_DIR");
  process.exit(2);
}

const TIMEOUT = 15000;
const options = {
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  timeout: 120000,
  args: [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
};
// A cold first start of Chromium on a busy 2-core machine can be slow:
// one more attempt before giving up.
let ctx;
for (let attempt = 1; ; attempt++) {
  try {
    ctx = await chromium.launchPersistentContext(userDataDir, options);
    break;
  } catch (e) {
    if (attempt >= 2) throw e;
    console.error(`chat-e2e: launching chromium failed (${String(e).split("\n")[0]}), retrying`);
  }
}

let failed = false;
try {
  const pages = [await ctx.newPage(), await ctx.newPage()];
  for (const p of pages) {
    p.on("console", (m) => console.log(`[page console] ${m.text()}`));
    await p.goto(url, { timeout: TIMEOUT });
    await p.waitForFunction(
      () => document.getElementById("status").textContent === "connected",
      null,
      { timeout: TIMEOUT },
    );
  }
  console.log("chat-e2e: both pages connected");
  const nonce = Math.random().toString(36).slice(2);
  const sendAndExpect = async (from, to, text) => {
    await from.fill("#msg", text);
    await from.press("#msg", "Enter");
    for (const p of [to, from]) {
      await p.waitForFunction(
        (t) => [...document.querySelectorAll("#log li")].some((li) => li.textContent === t),
        text,
        { timeout: TIMEOUT },
      );
    }
    console.log(`chat-e2e: "${text}" arrived`);
  };
  await sendAndExpect(pages[0], pages[1], `hello from A ${nonce}`);
  await sendAndExpect(pages[1], pages[0], `hi A, this is B ${nonce} ünïcödé ✓`);
  await sendAndExpect(pages[0], pages[1], "x".repeat(900));
} catch (e) {
  console.error(`chat-e2e: FAILED: ${e}`);
  failed = true;
} finally {
  await ctx.close();
}
process.exit(failed ? 1 : 0);
