//! The committed C header and the Rust definitions must agree: this test
//! writes a C file of `_Static_assert`s (every struct's size, every field's
//! offset and every constant, taken from the Rust side) and compiles it
//! against `include/myriad_plugin.h` with the system C compiler. A field
//! added, moved or retyped on one side only fails here.

use ::myriad_plugin::abi::myriad_plugin as plugin_table;
use ::myriad_plugin::abi::*;
use std::fmt::Write as _;
use std::mem::{offset_of, size_of};
use std::process::Command;

macro_rules! layout {
    ($out:ident, $t:ident { $($f:ident),* $(,)? }) => {
        writeln!($out, "_Static_assert(sizeof({}) == {}, \"size of {}\");", stringify!($t), size_of::<$t>(), stringify!($t)).unwrap();
        $(
            writeln!(
                $out,
                "_Static_assert(offsetof({t}, {f}) == {o}, \"offset of {t}.{f}\");\n\
                 _Static_assert(sizeof((({t} *)0)->{f}) == {s}, \"size of {t}.{f}\");",
                t = stringify!($t), f = stringify!($f), o = offset_of!($t, $f),
                s = size_of_field(|x: &$t| &x.$f),
            ).unwrap();
        )*
    };
}

macro_rules! constants {
    ($out:ident, $($c:ident),* $(,)?) => {
        $( writeln!($out, "_Static_assert(({}) == ({}), \"value of {}\");", stringify!($c), $c as i64, stringify!($c)).unwrap(); )*
    };
}

fn size_of_field<T, F>(_: impl Fn(&T) -> &F) -> usize {
    size_of::<F>()
}

#[test]
fn header_matches_rust_definitions() {
    let mut c = String::from(
        "#include <stddef.h>\n#include \"myriad_plugin.h\"\ntypedef myriad_plugin plugin_table;\n",
    );
    layout!(c, myriad_str { ptr, len });
    layout!(c, myriad_header { name, value });
    layout!(
        c,
        myriad_upgrade {
            path,
            query,
            headers,
            header_count,
            protocols,
            protocol_count,
            peer
        }
    );
    layout!(
        c,
        myriad_host {
            abi_version,
            struct_size,
            write,
            send,
            close,
            shutdown_write,
            pause_reading,
            resume_reading,
            set_timer,
            cancel_timer,
            peer_addr,
            local_addr,
            conn_id,
            subscribe,
            unsubscribe,
            publish,
            log,
            counter_add,
            spawn_blocking,
            fault,
        }
    );
    layout!(
        c,
        plugin_table {
            abi_version,
            struct_size,
            name,
            shape,
            reserved,
            init,
            shutdown,
            on_upgrade,
            on_open,
            on_data,
            message_size,
            on_message,
            on_drain,
            on_timer,
            on_close,
            on_task,
        }
    );
    constants!(
        c,
        MYRIAD_ABI_MAJOR,
        MYRIAD_ABI_MINOR,
        MYRIAD_ABI_VERSION,
        MYRIAD_OK,
        MYRIAD_ERR_CLOSED,
        MYRIAD_ERR_INVALID,
        MYRIAD_ERR_UNSUPPORTED,
        MYRIAD_ERR_LIMIT,
        MYRIAD_ERR_BUFFER,
        MYRIAD_SHAPE_STREAM,
        MYRIAD_SHAPE_MESSAGE,
        MYRIAD_TEXT,
        MYRIAD_BINARY,
        MYRIAD_CLOSE_LOCAL,
        MYRIAD_CLOSE_PEER,
        MYRIAD_CLOSE_ERROR,
        MYRIAD_CLOSE_TIMEOUT,
        MYRIAD_CLOSE_SHUTDOWN,
        MYRIAD_CLOSE_PROTOCOL,
        MYRIAD_CLOSE_FAULT,
        MYRIAD_FAULT_PANIC,
        MYRIAD_FAULT_ERROR,
        MYRIAD_LOG_ERROR,
        MYRIAD_LOG_WARN,
        MYRIAD_LOG_INFO,
        MYRIAD_LOG_DEBUG,
        MYRIAD_LOG_TRACE,
        MYRIAD_NEED_MORE,
    );
    // The entry point's name and signature.
    let sym =
        std::str::from_utf8(&MYRIAD_PLUGIN_ENTRY_SYMBOL[..MYRIAD_PLUGIN_ENTRY_SYMBOL.len() - 1])
            .unwrap();
    writeln!(c, "static const char sym[] = MYRIAD_PLUGIN_ENTRY_SYMBOL;\n_Static_assert(sizeof(sym) == {}, \"entry symbol\");", sym.len() + 1).unwrap();
    writeln!(c, "static myriad_plugin_entry_fn entry = {sym};\nconst myriad_plugin *use_entry(const myriad_host *h) {{ return entry(h); }}").unwrap();

    let dir = std::env::temp_dir().join(format!("myriad-plugin-header-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join("check.c");
    std::fs::write(&src, &c).unwrap();
    let include = concat!(env!("CARGO_MANIFEST_DIR"), "/include");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_owned());
    let out = Command::new(&cc)
        .args([
            "-std=c11",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-fsyntax-only",
            "-I",
            include,
        ])
        .arg(&src)
        .output()
        .unwrap_or_else(|e| panic!("the C compiler ({cc}) runs: {e}"));
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "header and Rust definitions differ:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
