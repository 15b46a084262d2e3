//! `switchboard stats [ADDR]` (cli.md): the server's `STATS` figures, once
//! or every `--watch SECS` with the counters' rates, like `redis-cli --stat`.

use std::io::Write as _;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use switchboard::Client;

use crate::clients::{ConnectArgs, describe_error, fail};

/// `switchboard stats [ADDR]`
#[derive(clap::Args, Debug)]
#[command(mut_arg("user", |a| a.required(false).default_value("stats")))]
pub(crate) struct StatsArgs {
    #[command(flatten)]
    conn: ConnectArgs,
    /// Server address `host:port`, or a URL tcp://, tls://, ws://, wss://
    /// [default: 127.0.0.1:7420, or 127.0.0.1:7421 with TLS].
    #[arg(value_name = "ADDR")]
    address: Option<String>,
    /// Print the figures again every SECS seconds, one line each: the
    /// connections and sessions, and per second the messages published
    /// and delivered, frames and bytes in and out.
    #[arg(long, value_name = "SECS")]
    watch: Option<f64>,
    /// With `--watch`: stop after N lines.
    #[arg(long, value_name = "N")]
    count: Option<u64>,
}

type Figures = Vec<(String, u64)>;

fn get(f: &Figures, key: &str) -> u64 {
    f.iter().find(|(k, _)| k == key).map_or(0, |(_, v)| *v)
}

pub(crate) fn run(args: StatsArgs) -> ExitCode {
    let interval = match args.watch {
        Some(s) if s.is_finite() && s > 0.0 => Some(Duration::from_secs_f64(s)),
        Some(s) => {
            return fail(
                "stats",
                &format!("--watch must be a positive number of seconds, not {s}"),
            );
        }
        None => None,
    };
    let client = match args.conn.connect(args.address.as_deref()) {
        Ok(c) => c,
        Err(e) => return fail("stats", &e),
    };
    let result = match interval {
        None => once(&client),
        Some(every) => watch(&client, every, args.count),
    };
    let _ = client.quit();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail("stats", &e),
    }
}

fn fetch(client: &Client) -> Result<Figures, String> {
    client
        .stats()
        .map_err(|e| format!("STATS failed: {}", describe_error(&e)))
}

/// Every figure, one `key value` line each, aligned.
fn once(client: &Client) -> Result<(), String> {
    let figures = fetch(client)?;
    let width = figures.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let mut out = std::io::stdout().lock();
    for (k, v) in &figures {
        let _ = writeln!(out, "{k:<width$}  {v}");
    }
    Ok(())
}

/// The columns of `--watch`: a heading, and whether the figure is a rate.
const COLUMNS: [(&str, &str, bool); 10] = [
    ("connections", "conns", false),
    ("sessions", "sessions", false),
    ("published", "pub/s", true),
    ("delivered", "deliv/s", true),
    ("frames_in", "frm_in/s", true),
    ("frames_out", "frm_out/s", true),
    ("bytes_in", "B_in/s", true),
    ("bytes_out", "B_out/s", true),
    ("slow_consumers", "slow", false),
    ("loop_turn_max_us", "turn_max_us", false),
];

fn watch(client: &Client, every: Duration, count: Option<u64>) -> Result<(), String> {
    let mut out = std::io::stdout().lock();
    let heading: Vec<String> = COLUMNS.iter().map(|(_, h, _)| format!("{h:>11}")).collect();
    let _ = writeln!(out, "{}", heading.join(" "));
    let mut last = fetch(client)?;
    let mut at = Instant::now();
    let mut lines = 0;
    while count.is_none_or(|n| lines < n) {
        std::thread::sleep(every);
        let now_figures = fetch(client)?;
        let now = Instant::now();
        let secs = now.duration_since(at).as_secs_f64().max(1e-9);
        let row: Vec<String> = COLUMNS
            .iter()
            .map(|&(key, _, rate)| {
                let v = get(&now_figures, key);
                if rate {
                    let d = v.saturating_sub(get(&last, key));
                    format!("{:>11.1}", d as f64 / secs)
                } else {
                    format!("{v:>11}")
                }
            })
            .collect();
        let _ = writeln!(out, "{}", row.join(" "));
        let _ = out.flush();
        last = now_figures;
        at = now;
        lines += 1;
    }
    Ok(())
}
