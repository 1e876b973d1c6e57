//! Sans-I/O WebSocket codec and handshake (work in progress).
