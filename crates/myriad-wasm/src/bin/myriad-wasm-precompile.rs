//! `myriad-wasm-precompile IN.wasm...`: writes `IN.cwasm` beside each
//! component, compiled for this host by this wasmtime version (used by
//! `scripts/build-plugins`; the server falls back to compiling when an
//! artifact does not match).

use std::process::ExitCode;

fn main() -> ExitCode {
    let mut rc = ExitCode::SUCCESS;
    for arg in std::env::args_os().skip(1) {
        let wasm = std::path::PathBuf::from(arg);
        let out = myriad_wasm::artifact_path(&wasm);
        let tmp = out.with_extension("cwasm.tmp");
        // written beside and renamed over: a server reading the old one
        // never sees half a file
        let r = myriad_wasm::precompile(&wasm)
            .map_err(|e| e.to_string())
            .and_then(|b| std::fs::write(&tmp, b).map_err(|e| format!("{}: {e}", tmp.display())))
            .and_then(|()| {
                std::fs::rename(&tmp, &out).map_err(|e| format!("{}: {e}", out.display()))
            });
        match r {
            Ok(()) => println!("built {}", out.display()),
            Err(e) => {
                eprintln!("myriad-wasm-precompile: {e}");
                rc = ExitCode::FAILURE;
            }
        }
    }
    rc
}
