//! WebAssembly plugins: a `.wasm` component of the world
//! `wit/myriad-plugin.wit`, run by `myriad-wasm` (wasmtime), behind the
//! same [`Code`](super::Code) interface as native libraries, so that
//! reload, faults, counters, rooms and timers are the native host's.
//!
//! The guest's host calls come back queued with each call's outcome and
//! are applied here through [`HostCx`], exactly as a native plugin's calls
//! would be. A trap or an interrupted call closes the connection with a
//! counted `plugin_trap` or `plugin_timeout`; the loop's instance is
//! poisoned, and each other connection whose state lived in it is closed
//! at its next event with a counted `plugin_lost` (or, for a plugin that
//! says `reopen`, opened again on a fresh instance).

use super::native::{ConnState, ServiceState};
use super::HostCx;
use crate::config::PluginSpec;
use ::myriad_plugin::abi::*;
use myriad_wasm::{
    CallError, CloseReason, Event, Grants, HostCall, Limits, LogLevel, MsgKind, ReadDir, Shape,
    WasmPlugin,
};
use std::path::Path;

/// A loaded wasm plugin.
#[derive(Debug)]
pub struct WasmLib {
    plugin: WasmPlugin,
}

/// Whether `path` names a wasm component (by its extension).
pub fn is_wasm(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "wasm")
}

fn kind_of(k: MsgKind) -> u32 {
    match k {
        MsgKind::Text => MYRIAD_TEXT,
        MsgKind::Binary => MYRIAD_BINARY,
    }
}

fn level_of(l: LogLevel) -> u32 {
    match l {
        LogLevel::Error => MYRIAD_LOG_ERROR,
        LogLevel::Warn => MYRIAD_LOG_WARN,
        LogLevel::Info => MYRIAD_LOG_INFO,
        LogLevel::Debug => MYRIAD_LOG_DEBUG,
        LogLevel::Trace => MYRIAD_LOG_TRACE,
    }
}

fn reason_of(r: u32) -> CloseReason {
    match r {
        MYRIAD_CLOSE_LOCAL => CloseReason::Local,
        MYRIAD_CLOSE_PEER => CloseReason::Peer,
        MYRIAD_CLOSE_TIMEOUT => CloseReason::Timeout,
        MYRIAD_CLOSE_SHUTDOWN => CloseReason::Shutdown,
        MYRIAD_CLOSE_PROTOCOL => CloseReason::Protocol,
        MYRIAD_CLOSE_FAULT => CloseReason::Fault,
        _ => CloseReason::Error,
    }
}

impl WasmLib {
    /// Loads (or compiles) the component of `spec`, with its limits and
    /// grants (environment variables granted by name get the server's
    /// values now; unset ones stay absent).
    ///
    /// # Errors
    ///
    /// The load error, naming the file.
    pub fn load(spec: &PluginSpec) -> Result<WasmLib, myriad_wasm::WasmError> {
        let d = Limits::default();
        let limits = Limits {
            memory: spec.wasm_memory.unwrap_or(d.memory),
            deadline: spec.wasm_deadline.unwrap_or(d.deadline),
        };
        let grants = Grants {
            read_dir: spec
                .wasm_read_dir
                .as_ref()
                .map(|(host, guest)| ReadDir {
                    host: host.clone(),
                    guest: guest.clone(),
                }),
            clock: spec.wasm_clock,
            env: spec
                .wasm_env
                .iter()
                .filter_map(|n| match std::env::var(n) {
                    Ok(v) => Some((n.clone(), v)),
                    Err(_) => {
                        tracing::warn!(file = %spec.path.display(), var = %n, "wasm_env: not set (or not UTF-8) in the server's environment; the plugin does not see it");
                        None
                    }
                })
                .collect(),
        };
        let path = &spec.path;
        let (plugin, origin) = WasmPlugin::load_granted(path, limits, grants)?;
        let g = plugin.grants();
        tracing::info!(
            file = %path.display(),
            plugin = %plugin.name(),
            ?origin,
            read_dir = ?g.read_dir.as_ref().map(|d| (&d.host, &d.guest)),
            clock = g.clock,
            env = g.env.len(),
            "wasm plugin loaded"
        );
        Ok(WasmLib { plugin })
    }

    pub fn name(&self) -> &str {
        self.plugin.name()
    }

    pub fn is_message(&self) -> bool {
        self.plugin.shape() == Shape::Message
    }

    pub fn init(&self, service: &str, config: &str) -> Result<ServiceState, String> {
        self.plugin
            .init(service, config)
            .map(|()| ServiceState::NULL)
            .map_err(|e| e.to_string())
    }

    /// Runs `ev` for the connection of `hc` and applies its host calls;
    /// returns the bytes consumed (0 after a fault).
    fn call(&self, hc: &mut HostCx<'_>, conn: &mut ConnState, ev: Event<'_>) -> u32 {
        let open = matches!(ev, Event::Open);
        let close = matches!(ev, Event::Close(..));
        let generation = match conn.tag() {
            0 if open => None,
            // never opened (its on_open failed): nothing of it in the guest
            0 => return 0,
            t => Some(t - 1),
        };
        let mut id = 0;
        hc.with_conn(|c, _| {
            id = c.id();
            MYRIAD_OK
        });
        if id == 0 {
            return 0;
        }
        match self.plugin.call(id, generation, ev) {
            Ok(out) => {
                *conn = ConnState::from_tag(out.generation + 1);
                apply(hc, out.calls);
                out.consumed
            }
            // closing anyway: its state went with the poisoned instance
            Err(CallError::Lost) if close => 0,
            Err(e) => {
                let kind = match e {
                    CallError::Timeout => "plugin_timeout",
                    CallError::Trap(_) => "plugin_trap",
                    CallError::Lost => "plugin_lost",
                    _ => "plugin_error",
                };
                // its state is gone with the instance: nothing to close
                *conn = ConnState::NONE;
                hc.fault(kind, &e.to_string());
                0
            }
        }
    }

    pub fn on_open(&self, hc: &mut HostCx<'_>, conn: &mut ConnState) {
        self.call(hc, conn, Event::Open);
    }

    pub fn on_data(&self, hc: &mut HostCx<'_>, conn: &mut ConnState, data: &[u8]) -> usize {
        let n = self.call(hc, conn, Event::Data(data)) as usize;
        if hc.fault.is_some() {
            data.len()
        } else {
            n
        }
    }

    pub fn on_message(&self, hc: &mut HostCx<'_>, conn: &mut ConnState, kind: u32, data: &[u8]) {
        let k = if kind == MYRIAD_TEXT {
            MsgKind::Text
        } else {
            MsgKind::Binary
        };
        self.call(hc, conn, Event::Message(k, data));
    }

    pub fn on_drain(&self, hc: &mut HostCx<'_>, conn: &mut ConnState) {
        self.call(hc, conn, Event::Drain);
    }

    pub fn on_timer(&self, hc: &mut HostCx<'_>, conn: &mut ConnState, token: u64) {
        self.call(hc, conn, Event::Timer(token));
    }

    pub fn on_close(&self, hc: &mut HostCx<'_>, mut conn: ConnState, reason: u32, code: u16) {
        self.call(hc, &mut conn, Event::Close(reason_of(reason), code));
    }
}

/// Applies a guest's queued host calls, in order, until one faults; gives
/// the queue back (with its byte buffers) for the next call to reuse.
fn apply(hc: &mut HostCx<'_>, calls: Vec<HostCall>) {
    for call in &calls {
        if hc.fault.is_some() {
            break;
        }
        match call {
            HostCall::Write(d) => hc.with_conn(|c, _| c.write(d)),
            HostCall::Send(k, d) => hc.with_conn(|c, _| c.send(kind_of(*k), d)),
            HostCall::Close(code, r) => hc.with_conn(|c, _| c.close(*code, r.as_bytes())),
            HostCall::SetTimer(ms, t) => hc.with_conn(|c, _| c.set_timer(*ms, *t)),
            HostCall::CancelTimer(t) => hc.with_conn(|c, _| c.cancel_timer(*t)),
            HostCall::Subscribe(t, on) => hc.with_conn(|c, s| c.subscribe(s, t.as_bytes(), *on)),
            HostCall::Publish(t, k, d) => {
                hc.with_conn(|c, s| c.publish(s, t.as_bytes(), kind_of(*k), d))
            }
            HostCall::Log(l, m) => {
                hc.svc().log(level_of(*l), m);
                MYRIAD_OK
            }
            HostCall::CounterAdd(n, v) => hc.svc().counter_add(n.as_bytes(), *v),
            _ => MYRIAD_ERR_UNSUPPORTED,
        };
    }
    myriad_wasm::recycle(calls);
}
