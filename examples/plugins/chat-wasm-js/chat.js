// chat-wasm-js — the chat room as a WebAssembly plugin in JavaScript, for
// WebSocket stacks (ws, wss): a message plugin of wit/myriad-plugin.wit.
//
// on-open joins the room ("room", or plugin_config's "room"); a text
// message is published to it (every member, on every loop) and counted as
// "messages"; a binary message closes the connection with 1003.
import { subscribe, publish, close, counterAdd } from 'myriad:plugin/host@1.0.0';

let room = 'room';

export function describe() {
  return { name: 'chat-wasm-js', shape: 'message', reopen: true };
}

export function init(service, config) {
  const c = JSON.parse(config);
  if (typeof c.room === 'string' && c.room.length > 0) {
    room = c.room;
  }
}

export function onOpen(conn) {
  if (subscribe(conn, room) !== 0) {
    close(conn, 1011, 'cannot join the room');
  }
}

export function onData(conn, data) {
  return data.length;
}

export function onMessage(conn, kind, data) {
  if (kind === 'text') {
    publish(conn, room, kind, data);
    counterAdd('messages', 1n);
  } else {
    close(conn, 1003, 'text only');
  }
}

export function onDrain(conn) {}

export function onTimer(conn, token) {}

export function onClose(conn, reason, code) {}
