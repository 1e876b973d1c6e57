//! `myriad service install|uninstall`: a systemd unit for the server.

use crate::ServiceCmd;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// The unit text. Hardening options are chosen not to break io_uring:
/// no `SystemCallFilter=@system-service` (it lacks `io_uring_setup` and
/// `io_uring_enter`), and `MemoryDenyWriteExecute` is fine.
pub fn unit_text(exe: &Path, config: Option<&Path>, user: bool) -> String {
    let cfg = config.map_or(String::new(), |c| format!(" --config {}", c.display()));
    let wanted = if user {
        "default.target"
    } else {
        "multi-user.target"
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
# One descriptor per connection: a million connections need a million.
LimitNOFILE=1048576
# io_uring rings and buffer rings may be charged to RLIMIT_MEMLOCK.
LimitMEMLOCK=infinity
NoNewPrivileges=yes
PrivateTmp=yes
ProtectSystem=full
ProtectHome=read-only
ProtectKernelModules=yes
ProtectControlGroups=yes
RestrictNamespaces=yes
LockPersonality=yes
MemoryDenyWriteExecute=yes
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX

[Install]
WantedBy={wanted}
",
        exe = exe.display()
    )
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
        } => {
            let exe = std::env::current_exe().context("locating the myriad binary")?;
            let config = match config {
                Some(c) => {
                    Some(std::fs::canonicalize(&c).with_context(|| format!("{}", c.display()))?)
                }
                None => None,
            };
            let text = unit_text(&exe, config.as_deref(), user);
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
