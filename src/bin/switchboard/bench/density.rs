//! `bench density`: N idle logged-in connections and the server's resident
//! memory per connection.

use std::time::{Duration, Instant};

use super::net::{Net, establish};
use super::report::Report;
use super::{CommonArgs, proc, secs};

#[derive(clap::Args, Debug)]
pub(crate) struct DensityArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// How many connections to open and log in (USER 0 <prefix>N).
    #[arg(long, value_name = "N", default_value_t = 1000)]
    connections: usize,
    /// User names are this prefix plus the connection's number.
    #[arg(long, value_name = "PREFIX", default_value = "u")]
    user_prefix: String,
    /// Seconds to wait, all connections idle, before reading the memory again.
    #[arg(long, value_name = "SECS", default_value_t = 1.0)]
    settle: f64,
}

/// Refuses counts the machine cannot hold (ports, open files).
pub(crate) fn check_count(n: usize) -> Result<(), String> {
    let n = n as u64;
    if let Some(limit) = proc::open_file_limit()
        && n + 32 > limit
    {
        return Err(format!(
            "{n} connections need more than the open-file limit of {limit} (ulimit -n)"
        ));
    }
    if let Some(ports) = proc::ephemeral_ports()
        && n + 1000 > ports
    {
        return Err(format!(
            "{n} connections from 127.0.0.1 need more than the {ports} ephemeral ports"
        ));
    }
    Ok(())
}

pub(crate) fn run(args: DensityArgs) -> Result<(Report, bool), String> {
    let c = &args.common;
    let target = c.target()?;
    let target = target.as_ref();
    let n = args.connections;
    if n == 0 {
        return Err("--connections must be at least 1".into());
    }
    check_count(n)?;
    let settle = if args.settle == 0.0 {
        Duration::ZERO
    } else {
        secs(args.settle, "--settle")?
    };
    let timeout = c.timeout()?;
    let endpoint = c.endpoint(c.tls)?;
    let mut report = Report::new("density");
    c.describe(&mut report, endpoint.addr, c.tls);
    report.param("connections", n);
    report.param("user_prefix", args.user_prefix.as_str());

    // Let the probe's connection go before the first reading.
    std::thread::sleep(Duration::from_millis(100));
    let rss_before = c.server_pid.map(proc::rss_kib).transpose()?;
    let mut net = Net::new(endpoint)?;
    let prefix = &args.user_prefix;
    let took = establish(
        &mut net,
        target,
        n,
        Instant::now() + timeout,
        |i, out| target.login(out, &format!("{prefix}{i}")),
        |_| 1,
    )?;
    std::thread::sleep(settle);
    let rss_after = c.server_pid.map(proc::rss_kib).transpose()?;
    net.close_all();

    report.figure("connections", n);
    report.figure("connect_login_s", took.as_secs_f64());
    report.figure("connections_per_s", super::report::rate(n as u64, took));
    if let (Some(before), Some(after)) = (rss_before, rss_after) {
        report.figure("server_rss_before_kib", before);
        report.figure("server_rss_after_kib", after);
        let per = (after as f64 - before as f64) * 1024.0 / n as f64;
        report.figure("server_bytes_per_connection", per);
    }
    Ok((report, c.json))
}
