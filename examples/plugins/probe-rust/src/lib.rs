//! The plugin the server's tests drive: a line-framed message plugin
//! (`framing = "line"`) that answers each command with one line, using a
//! host call per command, and misbehaves on request.
//!
//! ```text
//! ECHO text     -> text
//! ADDR          -> peer and local address
//! ID            -> the connection id (non-zero)
//! TIMER ms      -> "tick" after ms (on_timer)
//! CANCEL ms     -> sets a timer and cancels it: "cancelled", never "tick"
//! TIMERS a b .. -> timer i after the i-th delay (ms): "tick i" for each
//! REARM n ms    -> sets the TIMER timer n times (a timeout re-armed per
//!                  message): "rearmed", then one "tick" after ms
//! NEVER         -> a timer after Duration::MAX: "never", and no tick
//! SPIN          -> a zero-delay timer that sets itself again from on_timer,
//!                  forever: "spin" each time (the loop must go on serving)
//! BLOCK n       -> "done n*2" from the business pool (on_task)
//! COUNT name    -> "counted" (counter_add)
//! LOG text      -> "logged" (host log, level info)
//! PANIC         -> panics (the connection closes, plugin_panic counted)
//! CLOSE         -> "bye", then a graceful close
//! ```

use myriad_plugin::{export_plugin, CloseReason, Cx, Level, Message, Plugin, Shape};
use std::any::Any;
use std::time::Duration;

struct Probe;

fn reply(cx: &mut Cx<'_>, text: &str) {
    let _ = cx.send(Message::Binary(text.as_bytes()));
}

impl Plugin for Probe {
    type Conn = u64;
    const NAME: &'static std::ffi::CStr = c"probe-rust";
    const SHAPE: Shape = Shape::Message;

    fn init(_cx: &mut Cx<'_>, _service: &str, config: &str) -> Result<Self, String> {
        if config.contains("\"refuse\":true") {
            return Err("refused by its config".to_owned());
        }
        Ok(Probe)
    }

    fn on_open(&self, _cx: &mut Cx<'_>, conn: &mut u64) {
        *conn = 0;
    }

    fn on_message(&self, cx: &mut Cx<'_>, conn: &mut u64, msg: Message<'_>) {
        *conn += 1;
        let text = String::from_utf8_lossy(msg.as_bytes()).into_owned();
        let (cmd, arg) = text.split_once(' ').unwrap_or((&text, ""));
        let num = arg.trim().parse::<u64>().unwrap_or(0);
        match cmd {
            "ECHO" => reply(cx, arg),
            "ADDR" => {
                let a = format!(
                    "{} {}",
                    cx.peer_addr().unwrap_or_default(),
                    cx.local_addr().unwrap_or_default()
                );
                reply(cx, &a);
            }
            "ID" => {
                let id = cx.conn_id();
                reply(cx, &id.to_string());
            }
            "TIMER" => {
                let _ = cx.set_timer(Duration::from_millis(num), 7);
            }
            "TIMERS" => {
                for (i, ms) in arg.split_whitespace().enumerate() {
                    let ms = ms.parse::<u64>().unwrap_or(0);
                    let _ = cx.set_timer(Duration::from_millis(ms), 100 + i as u64);
                }
            }
            "REARM" => {
                let mut it = arg
                    .split_whitespace()
                    .map(|n| n.parse::<u64>().unwrap_or(0));
                let (n, ms) = (it.next().unwrap_or(0), it.next().unwrap_or(0));
                for _ in 0..n {
                    let _ = cx.set_timer(Duration::from_millis(ms), 7);
                }
                reply(cx, "rearmed");
            }
            "SPIN" => {
                let _ = cx.set_timer(Duration::ZERO, 10);
            }
            "NEVER" => {
                let _ = cx.set_timer(Duration::MAX, 9);
                reply(cx, "never");
            }
            "CANCEL" => {
                let _ = cx.set_timer(Duration::from_millis(num), 8);
                let _ = cx.cancel_timer(8);
                reply(cx, "cancelled");
            }
            "BLOCK" => {
                if cx.spawn_blocking(1, move || num * 2).is_err() {
                    reply(cx, "no pool");
                }
            }
            "COUNT" => {
                let r = cx.counter_add(arg, 1);
                reply(cx, if r.is_ok() { "counted" } else { "refused" });
            }
            "LOG" => {
                cx.log(Level::Info, arg);
                reply(cx, "logged");
            }
            "PANIC" => panic!("probe: deliberate panic"),
            "CLOSE" => {
                reply(cx, "bye");
                let _ = cx.close(0, "");
            }
            _ => reply(cx, "unknown"),
        }
    }

    fn on_timer(&self, cx: &mut Cx<'_>, _conn: &mut u64, token: u64) {
        match token {
            7 => reply(cx, "tick"),
            10 => {
                reply(cx, "spin");
                let _ = cx.set_timer(Duration::ZERO, 10);
            }
            100..200 => reply(cx, &format!("tick {}", token - 100)),
            _ => reply(cx, "wrong timer"),
        }
    }

    fn on_task(
        &self,
        cx: &mut Cx<'_>,
        conn: Option<&mut u64>,
        _token: u64,
        result: Box<dyn Any + Send>,
    ) {
        if conn.is_some() {
            let n = result.downcast::<u64>().map(|n| *n).unwrap_or(u64::MAX);
            reply(cx, &format!("done {n}"));
        }
    }

    fn on_close(&self, _cx: &mut Cx<'_>, _conn: u64, _reason: CloseReason, _code: u16) {}
}

export_plugin!(Probe);
