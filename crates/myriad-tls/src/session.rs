//! Client-side session storage for resumption.

use rustls::client::{
    ClientSessionMemoryCache, ClientSessionStore, Tls12ClientSessionValue, Tls13ClientSessionValue,
};
use rustls::pki_types::ServerName;
use rustls::NamedGroup;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

/// The most servers whose tickets are kept; past it, one server's tickets
/// are dropped to make room (as rustls's own cache does).
const MAX_SERVERS: usize = 256;

/// A client's resumption store that keeps up to `per_server` TLS 1.3
/// tickets per server and counts how often a new connection found one.
///
/// Why not rustls's `ClientSessionMemoryCache`: it keeps at most 8 tickets
/// per server, and a TLS 1.3 ticket is used once. A client with more than
/// 8 connections to one server in flight (a load generator, a connection
/// pool) then silently falls back to full handshakes for the rest. TLS 1.2
/// sessions and key-exchange hints are still kept by rustls's cache.
///
/// ```
/// use myriad_tls::SessionStore;
/// let store = SessionStore::new(1024);
/// assert_eq!(store.hits() + store.misses(), 0);
/// ```
#[derive(Debug)]
pub struct SessionStore {
    per_server: usize,
    tls13: Mutex<HashMap<ServerName<'static>, VecDeque<Tls13ClientSessionValue>>>,
    rest: ClientSessionMemoryCache,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl SessionStore {
    /// Keeps up to `per_server` TLS 1.3 tickets per server (at least 1).
    ///
    /// ```
    /// let store = std::sync::Arc::new(myriad_tls::SessionStore::new(64));
    /// # let _ = store;
    /// ```
    pub fn new(per_server: usize) -> Self {
        SessionStore {
            per_server: per_server.max(1),
            tls13: Mutex::new(HashMap::new()),
            rest: ClientSessionMemoryCache::new(MAX_SERVERS),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// New connections that found a TLS 1.3 ticket to offer.
    ///
    /// ```
    /// assert_eq!(myriad_tls::SessionStore::new(8).hits(), 0);
    /// ```
    pub fn hits(&self) -> u64 {
        self.hits.load(Relaxed)
    }

    /// New connections that found no TLS 1.3 ticket (a full handshake
    /// follows unless a TLS 1.2 session is resumed).
    ///
    /// ```
    /// assert_eq!(myriad_tls::SessionStore::new(8).misses(), 0);
    /// ```
    pub fn misses(&self) -> u64 {
        self.misses.load(Relaxed)
    }
}

impl ClientSessionStore for SessionStore {
    fn set_kx_hint(&self, server_name: ServerName<'static>, group: NamedGroup) {
        self.rest.set_kx_hint(server_name, group)
    }

    fn kx_hint(&self, server_name: &ServerName<'_>) -> Option<NamedGroup> {
        self.rest.kx_hint(server_name)
    }

    fn set_tls12_session(&self, server_name: ServerName<'static>, value: Tls12ClientSessionValue) {
        self.rest.set_tls12_session(server_name, value)
    }

    fn tls12_session(&self, server_name: &ServerName<'_>) -> Option<Tls12ClientSessionValue> {
        self.rest.tls12_session(server_name)
    }

    fn remove_tls12_session(&self, server_name: &ServerName<'static>) {
        self.rest.remove_tls12_session(server_name)
    }

    fn insert_tls13_ticket(
        &self,
        server_name: ServerName<'static>,
        value: Tls13ClientSessionValue,
    ) {
        // A poisoned lock only means another thread panicked mid-update of
        // a cache: dropping the ticket is the safe answer.
        let Ok(mut map) = self.tls13.lock() else {
            return;
        };
        if !map.contains_key(&server_name) && map.len() >= MAX_SERVERS {
            if let Some(k) = map.keys().next().cloned() {
                map.remove(&k);
            }
        }
        let q = map.entry(server_name).or_default();
        if q.len() >= self.per_server {
            q.pop_front();
        }
        q.push_back(value);
    }

    fn take_tls13_ticket(
        &self,
        server_name: &ServerName<'static>,
    ) -> Option<Tls13ClientSessionValue> {
        // Newest first, as rustls does: it has the longest life left.
        let t = self
            .tls13
            .lock()
            .ok()
            .and_then(|mut map| map.get_mut(server_name).and_then(|q| q.pop_back()));
        if t.is_some() {
            &self.hits
        } else {
            &self.misses
        }
        .fetch_add(1, Relaxed);
        t
    }
}
