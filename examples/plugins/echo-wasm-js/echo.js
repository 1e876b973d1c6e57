// echo-wasm-js — an echo as a WebAssembly plugin in JavaScript (a stream
// plugin of wit/myriad-plugin.wit; build: scripts/build-wasm-plugin
// OUT.wasm echo.js, which runs componentize-js).
//
// Per connection, in the instance keyed by connection id (one instance
// serves all of a loop's connections): the bytes echoed, added to the
// plugin counter "bytes" at close.
import { write, counterAdd } from 'myriad:plugin/host@1.0.0';

const conns = new Map();

export function describe() {
  return { name: 'echo-wasm-js', shape: 'stream', reopen: true };
}

export function init(service, config) {}

export function onOpen(conn) {
  conns.set(conn, 0n);
}

export function onData(conn, data) {
  write(conn, data);
  conns.set(conn, (conns.get(conn) ?? 0n) + BigInt(data.length));
  return data.length;
}

export function onMessage(conn, kind, data) {}

export function onDrain(conn) {}

export function onTimer(conn, token) {}

export function onClose(conn, reason, code) {
  const n = conns.get(conn);
  if (n !== undefined) {
    counterAdd('bytes', n);
    conns.delete(conn);
  }
}
