//! WebAssembly plugins in a build without the `wasm` feature (the fuzz
//! targets' build, which must not compile wasmtime): the same surface as
//! `wasm.rs`, where loading a `.wasm` plugin is an error and a `WasmLib`
//! cannot exist (an empty enum: its methods are never reached).

use super::native::{ConnState, ServiceState};
use super::HostCx;
use crate::config::PluginSpec;
use std::path::Path;

/// Loading a WebAssembly plugin in a build without it.
#[derive(Debug, thiserror::Error)]
#[error("{0}: this build of myriad has no WebAssembly support (cargo feature `wasm`)")]
pub struct NoWasm(String);

/// A WebAssembly plugin: none in this build.
#[derive(Debug)]
pub enum WasmLib {}

/// Whether `path` names a WebAssembly component (by its extension).
pub fn is_wasm(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "wasm")
}

#[allow(clippy::unused_self)]
impl WasmLib {
    /// Always fails: this build has no wasm runtime.
    ///
    /// # Errors
    ///
    /// [`NoWasm`], naming the file.
    pub fn load(spec: &PluginSpec) -> Result<WasmLib, NoWasm> {
        let path = &spec.path;
        Err(NoWasm(path.display().to_string()))
    }

    pub fn name(&self) -> &str {
        match *self {}
    }

    pub fn is_message(&self) -> bool {
        match *self {}
    }

    pub fn init(&self, _service: &str, _config: &str) -> Result<ServiceState, String> {
        match *self {}
    }

    pub fn on_open(&self, _hc: &mut HostCx<'_>, _conn: &mut ConnState) {
        match *self {}
    }

    pub fn on_data(&self, _hc: &mut HostCx<'_>, _conn: &mut ConnState, _data: &[u8]) -> usize {
        match *self {}
    }

    pub fn on_message(
        &self,
        _hc: &mut HostCx<'_>,
        _conn: &mut ConnState,
        _kind: u32,
        _data: &[u8],
    ) {
        match *self {}
    }

    pub fn on_drain(&self, _hc: &mut HostCx<'_>, _conn: &mut ConnState) {
        match *self {}
    }

    pub fn on_timer(&self, _hc: &mut HostCx<'_>, _conn: &mut ConnState, _token: u64) {
        match *self {}
    }

    pub fn on_close(&self, _hc: &mut HostCx<'_>, _conn: ConnState, _reason: u32, _code: u16) {
        match *self {}
    }
}
