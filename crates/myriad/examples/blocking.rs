//! Blocking work off the loop: a "lookup" service whose every request
//! needs a slow call (simulated with a 200 ms sleep). The slow part runs on
//! the business pool; the loop keeps serving everyone else meanwhile, and
//! the answer is written back on the connection's own loop.
//!
//! ```text
//! cargo run --release -p myriad --example blocking -- 127.0.0.1:7010 [--pool-threads N] [--queue N]
//! printf 'alice\n' | nc 127.0.0.1 7010
//! ```

use clap::Parser;
use myriad::{Ctx, Engine, Handler, Pool, Service};
use std::net::SocketAddr;
use std::time::Duration;

#[derive(Parser)]
struct Args {
    addr: SocketAddr,
    /// Pool threads (0 = number of cores).
    #[arg(long, default_value_t = 0)]
    pool_threads: usize,
    /// Most requests waiting for a pool thread.
    #[arg(long, default_value_t = 1024)]
    queue: usize,
}

struct Lookup {
    pool: Pool,
}

impl Handler for Lookup {
    fn on_data(&mut self, cx: &mut Ctx<'_>, data: &mut [u8]) -> usize {
        let Some(end) = data.iter().position(|&b| b == b'\n') else {
            return 0;
        };
        let key = String::from_utf8_lossy(&data[..end]).trim().to_string();
        let queued = cx.spawn_blocking(
            &self.pool,
            move || {
                std::thread::sleep(Duration::from_millis(200));
                format!("{key} => {}\n", key.len() * 42)
            },
            |cx, answer| cx.write(answer.as_bytes()),
        );
        if queued.is_err() {
            cx.write(b"busy: try again later\n");
        }
        end + 1
    }
}

fn main() {
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) if e.kind() == clap::error::ErrorKind::DisplayHelp => {
            print!("{e}");
            return;
        }
        Err(e) => {
            let msg = e.to_string();
            eprintln!(
                "blocking: {}",
                msg.lines()
                    .next()
                    .unwrap_or("invalid arguments")
                    .trim_start_matches("error: ")
            );
            std::process::exit(2);
        }
    };
    let pool = Pool::new(args.pool_threads, args.queue);
    let engine = match Engine::builder()
        .service(Service::new("lookup", args.addr, move || Lookup {
            pool: pool.clone(),
        }))
        .start()
    {
        Ok(e) => e,
        Err(e) => {
            eprintln!("blocking: {e}");
            std::process::exit(1);
        }
    };
    eprintln!("blocking: listening on {}", engine.local_addrs(0)[0]);
    let mut signals = match signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ]) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("blocking: {e}");
            std::process::exit(1);
        }
    };
    let _ = signals.forever().next();
    engine.shutdown(Duration::from_secs(2));
    let _ = engine.wait();
}
