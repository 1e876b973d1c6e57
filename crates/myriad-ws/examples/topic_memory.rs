//! Memory per subscription of the topic registry (`TopicTable`, the
//! per-loop structure behind `Topics`; keys are `u64` like `ConnId`).
//!
//! Scenarios: `many` = 1,000,000 topics with one subscriber each (names
//! `topic/NNNNNNN`, 13 bytes), `wide` = one topic with 100,000 subscribers.
//! Measures the growth of the resident set (/proc/self/statm) while
//! filling the table, then checks every subscription by a fan-out.
//!
//! ```text
//! cargo run --release -p myriad-ws --example topic_memory -- many
//! cargo run --release -p myriad-ws --example topic_memory -- wide
//! ```

use anyhow::{bail, Context};
use myriad_ws::TopicTable;

fn rss_bytes() -> anyhow::Result<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").context("reading statm")?;
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .context("statm has no resident field")?
        .parse()
        .context("statm resident field")?;
    Ok(pages * 4096)
}

fn main() -> anyhow::Result<()> {
    let scenario = std::env::args().nth(1).unwrap_or_else(|| "many".into());
    let mut t: TopicTable<u64> = TopicTable::new(16, 64);
    let names: Vec<String>;
    let before;
    let subs: u64;
    match scenario.as_str() {
        "many" => {
            subs = 1_000_000;
            // The names exist before the measurement: a real subscriber's
            // name arrives in its message, and only the table's copy counts.
            names = (0..subs).map(|i| format!("topic/{i:07}")).collect();
            before = rss_bytes()?;
            for (i, n) in names.iter().enumerate() {
                t.subscribe(i as u64, n)?;
            }
        }
        "wide" => {
            subs = 100_000;
            names = vec!["wide".into()];
            before = rss_bytes()?;
            for i in 0..subs {
                t.subscribe(i, "wide")?;
            }
        }
        other => bail!("unknown scenario {other} (many, wide)"),
    }
    let after = rss_bytes()?;
    let mut reached = 0u64;
    for n in &names {
        t.fanout(n, |_| {
            reached += 1;
            true
        });
    }
    if reached != subs || t.subscriptions() as u64 != subs {
        bail!("expected {subs} subscriptions, reached {reached}");
    }
    let per = (after - before) as f64 / subs as f64;
    println!(
        "RESULT scenario={scenario} topics={} subscriptions={subs} rss_growth_bytes={} bytes_per_subscription={per:.1}",
        t.topic_count(),
        after - before
    );
    Ok(())
}
