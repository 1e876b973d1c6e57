//! Plugins for the Myriad application server: the versioned C ABI and a
//! safe Rust SDK.
//!
//! A plugin is a shared library the `myriad` server loads by config
//! (`handler = "plugin"`, `plugin = "PATH"`). It exports one entry point,
//! `myriad_plugin_entry`, that receives the host's function table and
//! returns the plugin's ([`abi`]; the C header is
//! `include/myriad_plugin.h`). In Rust, a plugin is an `impl` of
//! [`Plugin`] plus one [`export_plugin!`] line, built as a `cdylib`.
//!
//! # Examples
//!
//! A stream echo:
//!
//! ```
//! use myriad_plugin::{export_plugin, Cx, Plugin, Shape};
//!
//! struct Echo;
//!
//! impl Plugin for Echo {
//!     type Conn = ();
//!     const NAME: &'static std::ffi::CStr = c"echo";
//!     const SHAPE: Shape = Shape::Stream;
//!
//!     fn init(_cx: &mut Cx<'_>, _service: &str, _config: &str) -> Result<Self, String> {
//!         Ok(Echo)
//!     }
//!
//!     fn on_data(&self, cx: &mut Cx<'_>, _conn: &mut (), data: &mut [u8]) -> usize {
//!         let _ = cx.write(data);
//!         data.len()
//!     }
//! }
//!
//! export_plugin!(Echo);
//! ```
//!
//! # Rules
//!
//! Every callback runs on the connection's event loop and must not block
//! (use [`Cx::spawn_blocking`]). The plugin value (`Self`) is shared by all
//! the service's loops, hence `Send + Sync`; a connection's state
//! (`Self::Conn`) only ever by its own loop. Bytes passed in are valid
//! during the callback only. A panic is caught at the boundary: that
//! connection is closed and counted (`plugin_panic`), the server goes on.

#![deny(missing_docs)]

pub mod abi;
mod sdk;

pub use sdk::{
    entry, CloseReason, Cx, Error, Level, Message, MessageSize, Plugin, Shape, Upgrade,
    UpgradeRequest,
};

/// Exports a [`Plugin`] implementation as the library's entry point.
///
/// ```
/// # use myriad_plugin::{export_plugin, Cx, Plugin, Shape};
/// # struct Nop;
/// # impl Plugin for Nop {
/// #     type Conn = ();
/// #     const NAME: &'static std::ffi::CStr = c"nop";
/// #     const SHAPE: Shape = Shape::Stream;
/// #     fn init(_: &mut Cx<'_>, _: &str, _: &str) -> Result<Self, String> { Ok(Nop) }
/// # }
/// export_plugin!(Nop);
/// ```
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        /// The plugin's entry point (see `myriad_plugin.h`).
        ///
        /// # Safety
        ///
        /// Called by the host with its function table.
        #[no_mangle]
        pub unsafe extern "C" fn myriad_plugin_entry(
            host: *const $crate::abi::myriad_host,
        ) -> *const $crate::abi::myriad_plugin {
            $crate::entry::<$plugin>(host)
        }
    };
}
