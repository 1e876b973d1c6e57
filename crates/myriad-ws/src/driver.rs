//! What the server and client engine handlers share: feeding frames to the
//! user's handler, failing a connection, lingering.

use std::time::Duration;

use myriad::Ctx;

use crate::app::{Message, WsCtx, WsHandler, TIMER_LINGER};
use crate::connection::{ClientConnection, Sender, ServerConnection};
use crate::decoder::Event;
use crate::error::{Error, ProtocolError};
use crate::frame::CloseCode;

/// `on_open` has been called.
pub(crate) const OPENED: u8 = 1;
/// `on_close` has been called.
pub(crate) const NOTIFIED: u8 = 1 << 1;
/// The connection failed or was refused: discard input until the peer's
/// FIN or the linger timer, then close.
pub(crate) const LINGER: u8 = 1 << 2;
/// The close handshake is complete (client: waiting for the server's FIN).
pub(crate) const DONE: u8 = 1 << 3;
/// Keepalive: a ping was sent and nothing has arrived since.
pub(crate) const AWAIT_PONG: u8 = 1 << 4;
/// Keepalive: the pending keepalive timer is the ping's deadline (else the
/// end of the interval).
pub(crate) const PONG_DUE: u8 = 1 << 5;

/// How long a failed connection waits for the peer to close after our last
/// bytes (close frame or HTTP error), so that closing with unread input does
/// not reset the connection and destroy them.
pub(crate) const LINGER_TIME: Duration = Duration::from_secs(2);

/// The two connection types, seen alike.
pub(crate) trait Conn {
    fn feed_ev<'c, F>(
        &mut self,
        input: &mut [u8],
        sink: &mut Ctx<'c>,
        on_event: &mut F,
    ) -> Result<usize, Error>
    where
        F: FnMut(Event<'_>, &mut Sender<'_, Ctx<'c>>);

    fn sender_for<'a, 'c>(&'a mut self, cx: &'a mut Ctx<'c>) -> Sender<'a, Ctx<'c>>;
}

impl Conn for ServerConnection {
    #[inline]
    fn feed_ev<'c, F>(
        &mut self,
        input: &mut [u8],
        sink: &mut Ctx<'c>,
        on_event: &mut F,
    ) -> Result<usize, Error>
    where
        F: FnMut(Event<'_>, &mut Sender<'_, Ctx<'c>>),
    {
        self.feed(input, sink, on_event)
    }

    fn sender_for<'a, 'c>(&'a mut self, cx: &'a mut Ctx<'c>) -> Sender<'a, Ctx<'c>> {
        self.sender(cx)
    }
}

impl Conn for ClientConnection {
    #[inline]
    fn feed_ev<'c, F>(
        &mut self,
        input: &mut [u8],
        sink: &mut Ctx<'c>,
        on_event: &mut F,
    ) -> Result<usize, Error>
    where
        F: FnMut(Event<'_>, &mut Sender<'_, Ctx<'c>>),
    {
        self.feed(input, sink, on_event)
    }

    fn sender_for<'a, 'c>(&'a mut self, cx: &'a mut Ctx<'c>) -> Sender<'a, Ctx<'c>> {
        self.sender(cx)
    }
}

/// What feeding frames came to.
pub(crate) struct Fed {
    /// Bytes consumed.
    pub consumed: usize,
    /// Data messages delivered.
    pub messages: u64,
    /// The protocol error the connection failed with (its close frame has
    /// been written), if any.
    pub error: Option<CloseCode>,
    /// The error was a compressed message over the inflation ratio.
    pub inflate_ratio: bool,
}

/// Feeds frames to the user's handler. On a protocol error the close frame
/// is already written; the caller counts it and calls [`fail`].
pub(crate) fn feed_frames<C: Conn, H: WsHandler>(
    conn: &mut C,
    user: &mut H,
    flags: &mut u8,
    close_timeout: Duration,
    cx: &mut Ctx<'_>,
    data: &mut [u8],
) -> Fed {
    let mut messages = 0u64;
    let r = conn.feed_ev(data, cx, &mut |ev, tx| {
        let mut w = WsCtx {
            tx: tx.reborrow(),
            close_timeout,
        };
        match ev {
            Event::Text(t) => {
                messages += 1;
                user.on_message(&mut w, Message::Text(t));
            }
            Event::Binary(b) => {
                messages += 1;
                user.on_message(&mut w, Message::Binary(b));
            }
            Event::Ping(p) => user.on_ping(&mut w, p),
            Event::Pong(p) => user.on_pong(&mut w, p),
            Event::Close { code, reason } => {
                if *flags & NOTIFIED == 0 {
                    *flags |= NOTIFIED;
                    user.on_close(&mut w, code.unwrap_or(CloseCode::NO_STATUS), reason);
                }
            }
        }
    });
    match r {
        Ok(consumed) => Fed {
            consumed,
            messages,
            error: None,
            inflate_ratio: false,
        },
        Err(e) => {
            let (code, reason) = match &e {
                Error::Protocol(p) => (p.close_code(), p.reason()),
                _ => (CloseCode::PROTOCOL_ERROR, "protocol error"),
            };
            if *flags & (OPENED | NOTIFIED) == OPENED {
                *flags |= NOTIFIED;
                let mut w = WsCtx {
                    tx: conn.sender_for(cx),
                    close_timeout,
                };
                user.on_close(&mut w, code, reason);
            }
            linger(flags, cx);
            Fed {
                consumed: data.len(),
                messages,
                error: Some(code),
                inflate_ratio: matches!(e, Error::Protocol(ProtocolError::InflateRatio { .. })),
            }
        }
    }
}

/// Shuts our side down behind what is queued and waits (bounded) for the
/// peer's FIN, discarding its input.
pub(crate) fn linger(flags: &mut u8, cx: &mut Ctx<'_>) {
    if *flags & LINGER == 0 {
        *flags |= LINGER;
        cx.shutdown_write();
        cx.set_timer(LINGER_TIME, TIMER_LINGER);
    }
}
