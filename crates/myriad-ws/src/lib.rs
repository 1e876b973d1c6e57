//! Sans-I/O WebSocket codec and handshake for Myriad.
//!
//! Nothing in this crate touches a socket: every type is a state machine fed
//! received bytes and writing bytes to send into a [`Sink`], in the style of
//! rustls and quinn-proto. The engine (or a test, a fuzzer, the load tool)
//! moves the bytes.
//!
//! * [`Decoder`] / [`Encoder`]: RFC 6455 framing with in-place unmasking and
//!   zero-copy delivery of whole unfragmented messages, incremental UTF-8
//!   validation, limits, and permessage-deflate (RFC 7692).
//! * [`handshake`]: the HTTP/1.1 upgrade, server and client side, and the
//!   legacy Hixie-76 and HyBi-07/08 handshakes.
//! * [`ServerConnection`] / [`ClientConnection`]: the whole life of a
//!   connection (handshake, open, closing, closed) with automatic pongs and
//!   the close handshake.
//! * [`PreparedMessage`]: encode once, write to many server connections.
//! * With the `engine` feature (on by default): the integration with the
//!   Myriad engine. [`server::WsServer`] turns a [`WsHandler`] factory into
//!   an engine service, [`client::WsClient`] is an outbound connection,
//!   [`WsCtx`] sends into the engine's pooled out-queue (the engine context
//!   implements [`Sink`]) and [`Room`] fans a message out to connections on
//!   every loop without copying it per recipient; [`Topics`] is the same
//!   for many named topics, published to from any thread, with a
//!   slow-subscriber policy.
//!
//! # Contract with the engine
//!
//! * **Input.** `feed(&mut [u8], ..)` takes the received bytes in the
//!   engine's own (pooled) buffer and returns how many it consumed. The
//!   engine keeps the rest and shows it again, in front of the next read.
//!   Frames are unmasked in place; consumed bytes are never looked at again,
//!   so nothing is unmasked twice. During the handshake `feed` returns 0
//!   until the whole request (or response) is there.
//! * **Zero copy.** A whole unfragmented, uncompressed message in the input
//!   is delivered as a slice of the input. Fragmented and compressed messages
//!   (and data frames larger than [`DecoderConfig::max_buffered_frame`],
//!   which are streamed rather than waited for) are assembled in one owned
//!   buffer per connection, reused from message to message: nothing is
//!   allocated per message in the steady state.
//! * **Output.** Everything to send goes into a [`Sink`] that the engine
//!   implements over its outbound buffers. A server frame is written as its
//!   header plus the caller's payload slice ([`Sink::write_vectored`]); a
//!   client frame is masked into the sink through a small stack buffer.
//! * **Errors.** A [`ProtocolError`] carries the close code to send (1002,
//!   1007, 1009); the connection types have already written the close frame
//!   (or, during the handshake, the HTTP error answer: 400, 403, 426, 431)
//!   when they return the error. Nothing a peer sends can panic.
//! * **No `unsafe`** anywhere in the crate.
//!
//! # Example
//!
//! ```
//! use myriad_ws::{ClientConfig, ClientConnection, Event, ServerConfig, ServerConnection};
//! let mut server = ServerConnection::new(ServerConfig::default().into());
//! let mut client = ClientConnection::new(ClientConfig::default(), "example.com", "/chat");
//! let (mut to_server, mut to_client) = (Vec::new(), Vec::new());
//! client.start(&mut to_server);
//! // server reads the request, answers 101
//! let n = server.feed(&mut to_server, &mut to_client, &mut |_, _| {}).unwrap();
//! to_server.drain(..n);
//! assert!(server.is_open());
//! let n = client.feed(&mut to_client, &mut to_server, &mut |_, _| {}).unwrap();
//! to_client.drain(..n);
//! assert!(client.is_open());
//! client.send_text(&mut to_server, "hello").unwrap();
//! let mut got = String::new();
//! server.feed(&mut to_server, &mut to_client, &mut |ev, _| {
//!     if let Event::Text(t) = ev { got.push_str(t) }
//! }).unwrap();
//! assert_eq!(got, "hello");
//! ```

#[cfg(feature = "engine")]
mod app;
#[cfg(feature = "engine")]
pub mod client;
mod connection;
mod decoder;
mod deflate;
#[cfg(feature = "engine")]
mod driver;
mod encoder;
mod error;
mod frame;
pub mod handshake;
pub mod legacy;
mod mask;
#[cfg(feature = "engine")]
mod room;
#[cfg(feature = "engine")]
pub mod server;
mod sink;
#[cfg(feature = "engine")]
mod topic;
mod utf8;

pub use connection::{
    ClientConfig, ClientConnection, ConnectionState, OriginCheck, Sender, ServerConfig,
    ServerConnection,
};
pub use decoder::{parse_close_payload, Decoder, DecoderConfig, Event};
pub use deflate::{
    parse_extensions, zlib_streams, DeflateConfig, DeflateParams, Deflater, ExtensionOffer,
    Inflater, ZlibStreams, INFLATE_RATIO_SLACK,
};
pub use encoder::{Encoder, PreparedMessage};
pub use error::{Error, HandshakeError, ProtocolError};
pub use frame::{write_frame, CloseCode, FrameHeader, MaskGen, MessageKind, OpCode, Role};
pub use mask::apply_mask;
pub use sink::Sink;
pub use utf8::Utf8Validator;

#[cfg(feature = "engine")]
pub use app::{send_prepared_to, Handshake, Message, Upgrade, UpgradeInfo, WsCtx, WsHandler};
#[cfg(feature = "engine")]
pub use room::Room;
#[cfg(feature = "engine")]
pub use topic::{
    Change, SlowPolicy, TopicError, TopicStats, TopicTable, Topics, TopicsConfig, Uplink,
};
