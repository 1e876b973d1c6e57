//! WebSocket clients on the Myriad engine (the load tool and the tests use
//! them): the same [`WsHandler`] API as servers, the same codec.
//!
//! ```no_run
//! use myriad::{ConnectOptions, Engine};
//! use myriad_ws::client::WsClient;
//! use myriad_ws::{ClientConfig, Handshake, Message, WsCtx, WsHandler};
//!
//! struct Hello;
//! impl WsHandler for Hello {
//!     fn on_open(&mut self, cx: &mut WsCtx<'_, '_>, _hs: &Handshake<'_>) {
//!         let _ = cx.send_text("hello");
//!     }
//!     fn on_message(&mut self, cx: &mut WsCtx<'_, '_>, msg: Message<'_>) {
//!         println!("got {msg:?}");
//!         let _ = cx.close(myriad_ws::CloseCode::NORMAL, "");
//!     }
//! }
//!
//! let engine = Engine::builder().threads(1).start()?;
//! let client = WsClient::new(ClientConfig::default(), "127.0.0.1:9001", "/", Hello);
//! engine.loop_handle(0).connect("127.0.0.1:9001".parse().unwrap(), ConnectOptions::default(), client);
//! # Ok::<(), myriad::Error>(())
//! ```

use std::time::Duration;

use myriad::{CloseReason, Ctx, Handler};

use crate::app::{
    Handshake, WsCtx, WsHandler, INTERNAL_TIMER, TIMER_CLOSE, TIMER_HANDSHAKE, TIMER_LINGER,
};
use crate::connection::{ClientConfig, ClientConnection, ConnectionState};
use crate::driver::{feed_frames, linger, DONE, LINGER, NOTIFIED, OPENED};
use crate::frame::CloseCode;

/// A WebSocket client connection as an engine [`Handler`]: give it to
/// [`myriad::LoopHandle::connect`] or [`myriad::LoopCx::connect`]. It sends
/// the upgrade request when the TCP connection is up, then drives `H`.
///
/// ```
/// use myriad_ws::{client::WsClient, ClientConfig, Message, WsCtx, WsHandler};
/// struct Quiet;
/// impl WsHandler for Quiet { fn on_message(&mut self, _: &mut WsCtx<'_, '_>, _: Message<'_>) {} }
/// let c = WsClient::new(ClientConfig::default(), "example.com", "/feed", Quiet)
///     .handshake_timeout(Some(std::time::Duration::from_secs(3)));
/// ```
pub struct WsClient<H> {
    ws: ClientConnection,
    user: H,
    flags: u8,
    handshake_timeout: Option<Duration>,
    close_timeout: Duration,
}

impl<H> std::fmt::Debug for WsClient<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsClient")
            .field("ws", &self.ws)
            .field("flags", &self.flags)
            .finish_non_exhaustive()
    }
}

impl<H: WsHandler> WsClient<H> {
    /// A client for `host` (the `Host` header) and `path`, driving
    /// `handler`. Defaults: 10 s handshake timeout, 5 s close timeout.
    ///
    /// ```
    /// use myriad_ws::{client::WsClient, ClientConfig, DeflateConfig, Message, WsCtx, WsHandler};
    /// struct H;
    /// impl WsHandler for H { fn on_message(&mut self, _: &mut WsCtx<'_, '_>, _: Message<'_>) {} }
    /// let cfg = ClientConfig { deflate: Some(DeflateConfig::default()), ..ClientConfig::default() };
    /// let c = WsClient::new(cfg, "localhost:9001", "/", H);
    /// ```
    pub fn new(config: ClientConfig, host: &str, path: &str, handler: H) -> Self {
        WsClient {
            ws: ClientConnection::new(config, host, path),
            user: handler,
            flags: 0,
            handshake_timeout: Some(Duration::from_secs(10)),
            close_timeout: Duration::from_secs(5),
        }
    }

    /// Gives up when the server has not answered the upgrade after this
    /// long (`None`: never).
    ///
    /// ```
    /// # use myriad_ws::{client::WsClient, ClientConfig, Message, WsCtx, WsHandler};
    /// # struct H;
    /// # impl WsHandler for H { fn on_message(&mut self, _: &mut WsCtx<'_, '_>, _: Message<'_>) {} }
    /// let c = WsClient::new(ClientConfig::default(), "h", "/", H).handshake_timeout(None);
    /// ```
    pub fn handshake_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// How long to wait for the server's answer to our close frame, and
    /// for the server to close the TCP connection after the close
    /// handshake.
    ///
    /// ```
    /// # use myriad_ws::{client::WsClient, ClientConfig, Message, WsCtx, WsHandler};
    /// # struct H;
    /// # impl WsHandler for H { fn on_message(&mut self, _: &mut WsCtx<'_, '_>, _: Message<'_>) {} }
    /// let c = WsClient::new(ClientConfig::default(), "h", "/", H)
    ///     .close_timeout(std::time::Duration::from_secs(1));
    /// ```
    pub fn close_timeout(mut self, timeout: Duration) -> Self {
        self.close_timeout = timeout;
        self
    }

    fn notify(&mut self, cx: &mut Ctx<'_>, code: CloseCode, reason: &str) {
        if self.flags & NOTIFIED == 0 {
            self.flags |= NOTIFIED;
            let mut w = WsCtx {
                tx: self.ws.sender(cx),
                close_timeout: self.close_timeout,
            };
            self.user.on_close(&mut w, code, reason);
        }
    }

    fn frames(&mut self, cx: &mut Ctx<'_>, data: &mut [u8]) -> usize {
        let fed = feed_frames(
            &mut self.ws,
            &mut self.user,
            &mut self.flags,
            self.close_timeout,
            cx,
            data,
        );
        if fed.error.is_none() && self.ws.is_closed() && self.flags & DONE == 0 {
            // close handshake complete: wait (bounded) for the server to
            // close the TCP connection
            self.flags |= DONE;
            cx.shutdown_write();
            cx.set_timer(self.close_timeout, TIMER_CLOSE);
        }
        fed.consumed
    }
}

impl<H: WsHandler> Handler for WsClient<H> {
    fn on_open(&mut self, cx: &mut Ctx<'_>) {
        self.ws.start(cx);
        if let Some(t) = self.handshake_timeout {
            cx.set_timer(t, TIMER_HANDSHAKE);
        }
    }

    fn on_data(&mut self, cx: &mut Ctx<'_>, data: &mut [u8]) -> usize {
        if self.flags & (LINGER | DONE) != 0 {
            return data.len();
        }
        if self.ws.state() != ConnectionState::Handshake {
            return self.frames(cx, data);
        }
        match self.ws.handshake(data) {
            Ok(0) => 0,
            Ok(n) => {
                self.flags |= OPENED;
                {
                    let mut headers = [httparse::EMPTY_HEADER; 64];
                    let mut resp = httparse::Response::new(&mut headers);
                    // parsed successfully a moment ago
                    let _ = resp.parse(&data[..n]);
                    let protocol = self.ws.protocol().map(str::to_owned);
                    let path = self.ws.path().to_owned();
                    let hs = Handshake {
                        path: &path,
                        headers: resp.headers,
                        protocol: protocol.as_deref(),
                    };
                    let mut w = WsCtx {
                        tx: self.ws.sender(cx),
                        close_timeout: self.close_timeout,
                    };
                    self.user.on_open(&mut w, &hs);
                }
                if self.flags & (LINGER | DONE) != 0 || n == data.len() {
                    return data.len();
                }
                n + self.frames(cx, &mut data[n..])
            }
            Err(e) => {
                let reason = e.to_string();
                self.notify(cx, CloseCode::ABNORMAL, &reason);
                linger(&mut self.flags, cx);
                data.len()
            }
        }
    }

    fn on_drain(&mut self, cx: &mut Ctx<'_>) {
        if self.flags & (OPENED | LINGER | DONE | NOTIFIED) == OPENED && self.ws.is_open() {
            let mut w = WsCtx {
                tx: self.ws.sender(cx),
                close_timeout: self.close_timeout,
            };
            self.user.on_drain(&mut w);
        }
    }

    fn on_eof(&mut self, cx: &mut Ctx<'_>) {
        self.notify(cx, CloseCode::ABNORMAL, "");
        cx.close();
    }

    fn on_timer(&mut self, cx: &mut Ctx<'_>, token: u64) {
        match token {
            TIMER_HANDSHAKE => {
                if self.ws.state() == ConnectionState::Handshake && self.flags & LINGER == 0 {
                    self.notify(cx, CloseCode::ABNORMAL, "handshake timeout");
                    cx.abort();
                }
            }
            TIMER_CLOSE => {
                self.notify(cx, CloseCode::ABNORMAL, "close timeout");
                cx.close();
            }
            TIMER_LINGER => cx.close(),
            t if t & INTERNAL_TIMER != 0 => {}
            t => {
                if self.flags & (OPENED | NOTIFIED) == OPENED {
                    let mut w = WsCtx {
                        tx: self.ws.sender(cx),
                        close_timeout: self.close_timeout,
                    };
                    self.user.on_timer(&mut w, t);
                }
            }
        }
    }

    fn on_shutdown(&mut self, cx: &mut Ctx<'_>) {
        if self.ws.is_open() && self.flags & LINGER == 0 {
            let mut w = WsCtx {
                tx: self.ws.sender(cx),
                close_timeout: self.close_timeout,
            };
            if w.close(CloseCode::GOING_AWAY, "client shutting down")
                .is_ok()
            {
                return;
            }
        }
        if self.ws.state() != ConnectionState::Closing {
            cx.close();
        }
    }

    fn on_close(&mut self, cx: &mut Ctx<'_>, reason: CloseReason) {
        if self.flags & NOTIFIED == 0 {
            let text = reason.to_string();
            self.notify(cx, CloseCode::ABNORMAL, &text);
        }
    }
}
