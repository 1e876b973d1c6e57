//! The built-in `pubsub` handler (ws/wss services) and the HTTP publish
//! route.
//!
//! # The JSON protocol of `handler = "pubsub"`
//!
//! Client to server, one JSON object per text message:
//!
//! * `{"op":"subscribe","topic":"news"}` → `{"event":"subscribed","topic":"news"}`,
//!   sent once the subscription is in place on this node and, with a
//!   broker, on the broker: from then on the client gets what any node
//!   publishes to the topic.
//! * `{"op":"unsubscribe","topic":"news"}` → `{"event":"unsubscribed","topic":"news"}`.
//! * `{"op":"publish","topic":"news","data":"hello"}` (only with
//!   `pubsub_publish = true`) → `{"event":"published","topic":"news"}`.
//! * Anything else → `{"event":"error","reason":"..."}`.
//!
//! A connection to `/some/topic` is subscribed to `some/topic` at once
//! (confirmed the same way); `/` subscribes to nothing.
//!
//! Server to client, each published message: `{"topic":"news","data":"hello"}`
//! (framed once per publish, whatever the number of subscribers).
//!
//! # `POST /publish/:topic`
//!
//! A `publish = "SERVICE"` route of an http/https service publishes the
//! request body (UTF-8 text) to the topic on that pubsub service, if the
//! request carries `Authorization: Bearer TOKEN` with the route's `token`
//! (compared in constant time): 401 without a bearer token, 403 with
//! another, 404 while the service is not running, 400 for a bad topic or
//! body, else 200 with `{"topic":"news","deliveries":N}`, N the
//! subscribers of this node it was queued on (other nodes get it through
//! the broker).

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use myriad_pubsub::ClusterHandle;
use myriad_ws::{
    send_prepared_to, CloseCode, Handshake, Message, MessageKind, PreparedMessage, Topics, WsCtx,
    WsHandler,
};
use serde_json::{json, Value};

/// The topics of each running pubsub service, by service name, for the
/// publish routes (which may start before or after it).
fn registry() -> &'static Mutex<HashMap<String, Node>> {
    static R: OnceLock<Mutex<HashMap<String, Node>>> = OnceLock::new();
    R.get_or_init(|| Mutex::new(HashMap::new()))
}

/// One pubsub service's topics and its cluster link.
#[derive(Clone)]
pub struct Node {
    pub topics: Topics,
    pub cluster: Option<ClusterHandle>,
    /// Clients may publish.
    pub publish: bool,
}

/// Makes `node` the one publish routes reach for `service`.
pub fn register(service: &str, node: &Node) {
    let mut r = registry().lock().unwrap_or_else(|p| p.into_inner());
    r.insert(service.to_owned(), node.clone());
}

fn lookup(service: &str) -> Option<Node> {
    let r = registry().lock().unwrap_or_else(|p| p.into_inner());
    r.get(service).cloned()
}

/// The frame every subscriber of `topic` gets for `data`.
pub fn message(topic: &str, data: &str) -> PreparedMessage {
    let v = json!({ "topic": topic, "data": data });
    PreparedMessage::new(MessageKind::Text, v.to_string().as_bytes())
}

fn event(cx: &mut WsCtx<'_, '_>, v: Value) {
    let _ = cx.send_text(&v.to_string());
}

/// A client of a `pubsub` service.
pub struct Member {
    node: Node,
}

impl Member {
    pub fn new(node: &Node) -> Self {
        Member { node: node.clone() }
    }

    fn subscribe(&mut self, cx: &mut WsCtx<'_, '_>, topic: &str) {
        if let Err(e) = self.node.topics.subscribe(cx, topic) {
            return event(
                cx,
                json!({"event": "error", "topic": topic, "reason": e.to_string()}),
            );
        }
        let confirm = PreparedMessage::new(
            MessageKind::Text,
            json!({"event": "subscribed", "topic": topic})
                .to_string()
                .as_bytes(),
        );
        match &self.node.cluster {
            None => {
                let _ = cx.send_prepared(&confirm);
            }
            Some(c) => {
                // Confirmed once the broker has the subscription: what
                // other nodes publish after the confirmation arrives.
                let id = cx.id();
                let home = cx.loop_cx().loops()[id.loop_index()].clone();
                c.sync(move || {
                    home.post(move |lcx| {
                        send_prepared_to(lcx, id, &confirm);
                    });
                });
            }
        }
    }
}

impl WsHandler for Member {
    fn on_open(&mut self, cx: &mut WsCtx<'_, '_>, hs: &Handshake<'_>) {
        let topic = hs.path().trim_start_matches('/');
        if !topic.is_empty() {
            let topic = topic.to_owned();
            self.subscribe(cx, &topic);
        }
    }

    fn on_message(&mut self, cx: &mut WsCtx<'_, '_>, msg: Message<'_>) {
        let Message::Text(text) = msg else {
            return event(
                cx,
                json!({"event": "error", "reason": "text messages only"}),
            );
        };
        let Ok(v) = serde_json::from_str::<Value>(text) else {
            return event(cx, json!({"event": "error", "reason": "not JSON"}));
        };
        let op = v.get("op").and_then(Value::as_str).unwrap_or("");
        let Some(topic) = v.get("topic").and_then(Value::as_str) else {
            return event(cx, json!({"event": "error", "reason": "no topic"}));
        };
        match op {
            "subscribe" => self.subscribe(cx, topic),
            "unsubscribe" => {
                self.node.topics.unsubscribe(cx, topic);
                event(cx, json!({"event": "unsubscribed", "topic": topic}));
            }
            "publish" if !self.node.publish => event(
                cx,
                json!({"event": "error", "topic": topic, "reason": "publishing is not allowed"}),
            ),
            "publish" => {
                let Some(data) = v.get("data").and_then(Value::as_str) else {
                    return event(cx, json!({"event": "error", "reason": "no data"}));
                };
                if topic.is_empty() || topic.len() > self.node.topics.config().max_topic_len {
                    return event(cx, json!({"event": "error", "reason": "bad topic"}));
                }
                let m = message(topic, data);
                // From a connection of this service: its loop is one of
                // the topics' loops.
                self.node.topics.publish_from(cx.loop_cx(), topic, &m);
                event(cx, json!({"event": "published", "topic": topic}));
            }
            _ => event(cx, json!({"event": "error", "reason": "unknown op"})),
        }
    }

    fn on_close(&mut self, cx: &mut WsCtx<'_, '_>, _code: CloseCode, _reason: &str) {
        self.node.topics.unsubscribe_all(cx);
    }
}

/// Equal in time independent of where the first difference is.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u8::from(a.len() != b.len());
    for (i, x) in a.iter().enumerate() {
        // Compares against itself past b's end, to take the same time.
        let y = b.get(i).copied().unwrap_or(!*x);
        diff |= x ^ y;
    }
    diff == 0
}

/// Checks a publish request: the node and the message to publish, or
/// the status and JSON body to answer.
pub fn check_publish(
    service: &str,
    token: &str,
    authorization: Option<&[u8]>,
    topic: &str,
    body: &[u8],
) -> Result<(Node, PreparedMessage), (u16, String)> {
    let err = |status: u16, reason: &str| Err((status, json!({ "error": reason }).to_string()));
    let Some(given) = authorization.and_then(|a| a.strip_prefix(b"Bearer ")) else {
        return err(401, "a bearer token is required");
    };
    if !constant_time_eq(given, token.as_bytes()) {
        return err(403, "wrong token");
    }
    let Some(node) = lookup(service) else {
        return err(404, "the pubsub service is not running");
    };
    if topic.is_empty() || topic.len() > node.topics.config().max_topic_len {
        return err(400, "bad topic");
    }
    let Ok(data) = std::str::from_utf8(body) else {
        return err(400, "the body must be UTF-8 text");
    };
    let m = message(topic, data);
    Ok((node, m))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"secret2", b"secret"));
        assert!(!constant_time_eq(b"", b"x"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn publish_request_statuses() {
        let n = Node {
            topics: Topics::default(),
            cluster: None,
            publish: false,
        };
        register("unit-svc", &n);
        let st = |auth: Option<&[u8]>, topic: &str, body: &[u8]| {
            check_publish("unit-svc", "tok", auth, topic, body)
                .err()
                .map(|e| e.0)
        };
        assert_eq!(st(None, "t", b"x"), Some(401));
        assert_eq!(st(Some(b"Basic dG9r"), "t", b"x"), Some(401));
        assert_eq!(st(Some(b"Bearer nope"), "t", b"x"), Some(403));
        assert_eq!(st(Some(b"Bearer tok"), "", b"x"), Some(400));
        assert_eq!(st(Some(b"Bearer tok"), "t", b"\xff"), Some(400));
        assert_eq!(st(Some(b"Bearer tok"), "t", b"x"), None);
        let other = check_publish("no-such", "tok", Some(b"Bearer tok"), "t", b"x");
        assert_eq!(other.err().map(|e| e.0), Some(404));
    }
}
