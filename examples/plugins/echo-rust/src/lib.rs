//! A stream echo as a Myriad plugin: every byte back, as it comes.
//!
//! Build: `cargo build --release -p echo-rust` (or `scripts/build-plugins`),
//! then name `target/plugins/libecho_rust.so` in a service with
//! `handler = "plugin"`.

use myriad_plugin::{export_plugin, Cx, Plugin, Shape};

struct Echo;

impl Plugin for Echo {
    type Conn = ();
    const NAME: &'static std::ffi::CStr = c"echo-rust";
    const SHAPE: Shape = Shape::Stream;

    fn init(_cx: &mut Cx<'_>, _service: &str, _config: &str) -> Result<Self, String> {
        Ok(Echo)
    }

    fn on_data(&self, cx: &mut Cx<'_>, _conn: &mut (), data: &mut [u8]) -> usize {
        // A closed connection takes nothing more; the bytes are consumed
        // either way.
        let _ = cx.write(data);
        data.len()
    }
}

export_plugin!(Echo);
