//! `myriad service install|uninstall`: a systemd unit for the server.

use crate::ServiceCmd;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// Quotes a path for a unit file's command line (systemd's rules: double
/// quotes, backslash escapes, `%` doubled as a specifier escape).
fn quote(p: &Path) -> String {
    let text = p.display().to_string();
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '%' => out.push_str("%%"),
            '$' => out.push_str("$$"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The unit text: `Type=notify` with the watchdog, and sandboxed so that
/// `systemd-analyze security` rates it "OK" (exposure below 5.0, tested).
/// The server runs as a dynamic user (or `--run-as USER`), with only
/// `CAP_NET_BIND_SERVICE`, a read-only system, no home, no devices, and a
/// system-call allow-list: `@system-service` plus io_uring's three calls
/// (systemd merges allow-lists; were io_uring blocked, the server would
/// fall back to epoll and say so in its log). `MemoryDenyWriteExecute` is
/// fine for native plugins (libraries are mapped from files, never
/// written and executed), but forbids the executable memory wasmtime
/// compiles WebAssembly plugins into: with `wasm` (the config uses wasm
/// plugins) the unit leaves it out and says why.
pub fn unit_text(
    exe: &Path,
    config: Option<&Path>,
    user: bool,
    run_as: Option<&str>,
    wasm: bool,
) -> String {
    let mdwe = if wasm {
        "# MemoryDenyWriteExecute=yes is left out: the config uses WebAssembly\n\
         # plugins, which wasmtime compiles into executable memory at run time.\n"
    } else {
        "MemoryDenyWriteExecute=yes\n"
    };
    let cfg = config.map_or(String::new(), |c| format!(" --config {}", quote(c)));
    let wanted = if user {
        "default.target"
    } else {
        "multi-user.target"
    };
    // A user unit runs as its user already; capabilities and user
    // switching are not for it to set.
    let identity = match (user, run_as) {
        (true, _) => String::new(),
        (false, Some(u)) => format!("User={u}\n"),
        (false, None) => "DynamicUser=yes\n".to_owned(),
    };
    let caps = if user {
        "CapabilityBoundingSet=\n"
    } else {
        "AmbientCapabilities=CAP_NET_BIND_SERVICE\nCapabilityBoundingSet=CAP_NET_BIND_SERVICE\n"
    };
    format!(
        "[Unit]
Description=Myriad application server
Documentation=https://example.invalid/myriad
After=network-online.target
Wants=network-online.target

[Service]
Type=notify
NotifyAccess=main
ExecStart={exe} serve{cfg}
ExecReload=/bin/kill -HUP $MAINPID
Restart=on-failure
RestartSec=1s
TimeoutStopSec=30s
WatchdogSec=30s
{identity}{caps}# One descriptor per connection: a million connections need a million.
LimitNOFILE=1048576
# io_uring rings and buffer rings may be charged to RLIMIT_MEMLOCK.
LimitMEMLOCK=infinity
# Certificates: readable by the service's user or group (--run-as), or
# handed over with LoadCredential= (see the README).
UMask=0077
NoNewPrivileges=yes
PrivateTmp=yes
PrivateDevices=yes
DevicePolicy=closed
ProtectSystem=strict
ProtectHome=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
ProtectProc=invisible
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
RemoveIPC=yes
LockPersonality=yes
{mdwe}RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallFilter=io_uring_setup io_uring_enter io_uring_register
SystemCallFilter=~@privileged
SystemCallErrorNumber=EPERM

[Install]
WantedBy={wanted}
",
        exe = quote(exe)
    )
}

/// Whether the config at `path` has a wasm plugin (a service's or a ws
/// route's plugin path ending in `.wasm`). A config that does not load is
/// `serve`'s to report; the unit then keeps the stricter setting.
fn uses_wasm(path: &Path) -> bool {
    let Ok(cfg) = crate::config::load(path) else {
        return false;
    };
    let wasm = |p: &crate::config::PluginSpec| crate::plugin::wasm::is_wasm(&p.path);
    cfg.services.iter().any(|s| {
        s.plugin.as_ref().is_some_and(wasm)
            || s.routes.iter().any(|r| {
                matches!(&r.kind, crate::config::RouteKind::Ws(crate::config::WsRoute::Plugin(p)) if wasm(p))
            })
    })
}

fn unit_path(user: bool) -> Result<PathBuf> {
    if user {
        let home = std::env::var_os("HOME").context("HOME is not set")?;
        Ok(PathBuf::from(home).join(".config/systemd/user/myriad.service"))
    } else {
        Ok(PathBuf::from("/etc/systemd/system/myriad.service"))
    }
}

pub fn run(cmd: ServiceCmd) -> Result<()> {
    match cmd {
        ServiceCmd::Install {
            user,
            config,
            print,
            run_as,
        } => {
            let exe = std::env::current_exe().context("locating the myriad binary")?;
            let config = match config {
                Some(c) => {
                    Some(std::fs::canonicalize(&c).with_context(|| format!("{}", c.display()))?)
                }
                None => None,
            };
            let wasm = config.as_deref().is_some_and(uses_wasm);
            let text = unit_text(&exe, config.as_deref(), user, run_as.as_deref(), wasm);
            if print {
                print!("{text}");
                return Ok(());
            }
            let path = unit_path(user)?;
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
            std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
            let ctl = if user {
                "systemctl --user"
            } else {
                "systemctl"
            };
            println!("wrote {}", path.display());
            println!(
                "enable and start it with:\n  {ctl} daemon-reload\n  {ctl} enable --now myriad"
            );
            Ok(())
        }
        ServiceCmd::Uninstall { user } => {
            let path = unit_path(user)?;
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    let ctl = if user {
                        "systemctl --user"
                    } else {
                        "systemctl"
                    };
                    println!("removed {}; run `{ctl} daemon-reload`", path.display());
                    Ok(())
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    println!("{} is not installed", path.display());
                    Ok(())
                }
                Err(e) => Err(e).with_context(|| format!("removing {}", path.display())),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wasm_plugins_drop_memory_deny_write_execute() {
        let exe = Path::new("/usr/bin/myriad");
        let native = unit_text(exe, None, false, None, false);
        assert!(native.lines().any(|l| l == "MemoryDenyWriteExecute=yes"));
        let wasm = unit_text(exe, None, false, None, true);
        assert!(!wasm
            .lines()
            .any(|l| l.starts_with("MemoryDenyWriteExecute")));
        assert!(
            wasm.contains("# MemoryDenyWriteExecute=yes is left out: the config uses WebAssembly")
        );
        // nothing else changed
        assert_eq!(native.lines().count() + 1, wasm.lines().count());
    }

    #[test]
    fn uses_wasm_reads_the_config() {
        let dir = std::env::temp_dir().join(format!("myriad-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("p.wasm"), b"not read by the check").unwrap();
        std::fs::write(dir.join("libp.so"), b"not read by the check").unwrap();
        let cfg = |plugin: &str| {
            format!("[[service]]\nname = \"p\"\nlisten = [\"127.0.0.1:0\"]\nstack = \"tcp\"\nhandler = \"plugin\"\nplugin = \"{plugin}\"\n")
        };
        std::fs::write(dir.join("w.toml"), cfg("p.wasm")).unwrap();
        std::fs::write(dir.join("n.toml"), cfg("libp.so")).unwrap();
        assert!(uses_wasm(&dir.join("w.toml")));
        assert!(!uses_wasm(&dir.join("n.toml")));
        assert!(!uses_wasm(&dir.join("missing.toml")));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
