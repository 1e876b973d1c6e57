//! A key-value store as a Myriad message plugin, one command per line
//! (run it with `framing = "line"` on a tcp or tls stack):
//!
//! ```text
//! SET key value   -> OK
//! GET key         -> VALUE value | NOT_FOUND
//! DEL key         -> DELETED | NOT_FOUND
//! COUNT           -> COUNT n
//! anything else   -> ERR ...
//! ```
//!
//! The store is shared by every connection of the service, on every loop:
//! a map behind a mutex held only for one map operation (never across a
//! host call), so a loop never waits long. Bounded: at most `max_keys`
//! keys (config, default 100,000), keys up to 256 bytes, values up to
//! 64 KiB. Counts `set`, `get_hit` and `get_miss` in `/metrics`.

use myriad_plugin::{export_plugin, Cx, Level, Message, Plugin, Shape};
use std::collections::HashMap;
use std::sync::Mutex;

struct Kv {
    map: Mutex<HashMap<Vec<u8>, Vec<u8>>>,
    max_keys: usize,
}

const MAX_KEY: usize = 256;
const MAX_VALUE: usize = 64 << 10;

/// `"max_keys": N` from the config's JSON (the only setting).
fn max_keys(config: &str) -> Result<usize, String> {
    let Some(i) = config.find("\"max_keys\"") else {
        return Ok(100_000);
    };
    let rest = config[i + "\"max_keys\"".len()..].trim_start();
    let rest = rest
        .strip_prefix(':')
        .ok_or("max_keys: expected a number")?
        .trim_start();
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    match digits.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!(
            "max_keys must be a positive number, got {:?}",
            rest.split([',', '}']).next().unwrap_or("")
        )),
    }
}

impl Plugin for Kv {
    type Conn = ();
    const NAME: &'static std::ffi::CStr = c"kv-rust";
    const SHAPE: Shape = Shape::Message;

    fn init(cx: &mut Cx<'_>, service: &str, config: &str) -> Result<Self, String> {
        let max_keys = max_keys(config)?;
        cx.log(
            Level::Info,
            &format!("kv store for {service}: up to {max_keys} keys"),
        );
        Ok(Kv {
            map: Mutex::default(),
            max_keys,
        })
    }

    fn on_message(&self, cx: &mut Cx<'_>, _conn: &mut (), msg: Message<'_>) {
        let line = msg.as_bytes();
        let mut parts = line.splitn(3, |&b| b == b' ');
        let cmd = parts.next().unwrap_or_default();
        let key = parts.next().filter(|k| !k.is_empty());
        let value = parts.next();
        let reply: Vec<u8> = match (cmd, key, value) {
            (b"SET", Some(k), Some(v)) if k.len() <= MAX_KEY && v.len() <= MAX_VALUE => {
                let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
                if map.len() >= self.max_keys && !map.contains_key(k) {
                    b"ERR store full".to_vec()
                } else {
                    map.insert(k.to_vec(), v.to_vec());
                    drop(map);
                    let _ = cx.counter_add("set", 1);
                    b"OK".to_vec()
                }
            }
            (b"SET", Some(_), Some(_)) => b"ERR key or value too long".to_vec(),
            (b"GET", Some(k), None) => {
                let found = self
                    .map
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(k)
                    .cloned();
                match found {
                    Some(v) => {
                        let _ = cx.counter_add("get_hit", 1);
                        [&b"VALUE "[..], &v].concat()
                    }
                    None => {
                        let _ = cx.counter_add("get_miss", 1);
                        b"NOT_FOUND".to_vec()
                    }
                }
            }
            (b"DEL", Some(k), None) => {
                let gone = self.map.lock().unwrap_or_else(|p| p.into_inner()).remove(k);
                if gone.is_some() {
                    b"DELETED".to_vec()
                } else {
                    b"NOT_FOUND".to_vec()
                }
            }
            (b"COUNT", None, None) => {
                let n = self.map.lock().unwrap_or_else(|p| p.into_inner()).len();
                format!("COUNT {n}").into_bytes()
            }
            _ => b"ERR usage: SET key value | GET key | DEL key | COUNT".to_vec(),
        };
        let _ = cx.send(Message::Binary(&reply));
    }
}

export_plugin!(Kv);
