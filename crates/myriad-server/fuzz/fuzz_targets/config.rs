//! Arbitrary text as a configuration file: `config::parse` either returns a
//! configuration that holds its documented bounds or an error located
//! inside the text (line and column within it, 1-based).
#![no_main]

use libfuzzer_sys::fuzz_target;
use myriad_server::config::{self, Stack};
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    // Paths are read (plugins) and checked (certs): keep the fuzzer away
    // from the files of the machine it runs on. Relative paths resolve
    // against a folder that does not exist.
    if ["/proc", "/sys", "/dev"].iter().any(|p| text.contains(p)) {
        return;
    }
    let base = Path::new("/nonexistent/myriad-fuzz");
    match config::parse("fuzz.toml", &text, Some(base)) {
        Ok(cfg) => {
            assert!((1..=255).contains(&cfg.io_threads));
            assert!((1..=1024).contains(&cfg.workers));
            let mut names = std::collections::HashSet::new();
            for s in &cfg.services {
                assert!(!s.name.is_empty() && s.name.len() <= 64);
                assert!(names.insert(s.name.as_str()), "duplicate {:?}", s.name);
                assert!(!s.listen.is_empty());
                assert!(s.backlog >= 1);
                // routes exactly on http stacks, never a path twice
                assert_eq!(s.stack.is_http(), !s.routes.is_empty());
                let mut paths = std::collections::HashSet::new();
                for r in &s.routes {
                    assert!(r.path.starts_with('/'), "{:?}", r.path);
                    assert!(paths.insert(r.path.as_str()), "duplicate {:?}", r.path);
                }
                let tls = matches!(s.stack, Stack::Tls | Stack::Wss | Stack::Https);
                assert_eq!(tls, s.cert.is_some() && s.key.is_some());
                assert!(s.send_timeout.is_none_or(|d| !d.is_zero()));
                assert!(s.linger.is_none_or(|d| !d.is_zero()));
            }
        }
        Err(e) => {
            let lines = text.split('\n').count();
            assert!(
                e.line >= 1 && e.line <= lines && e.col >= 1,
                "{e} (text of {lines} lines)"
            );
            let line = text.split('\n').nth(e.line - 1).unwrap_or("");
            assert!(
                e.col <= line.len() + 1,
                "{e}: column past the line {line:?}"
            );
            let _ = e.to_string();
        }
    }
});
