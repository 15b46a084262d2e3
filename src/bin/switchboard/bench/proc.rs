//! The server's footprint from `/proc/PID`: resident memory (`VmRSS` in
//! `status`) and CPU time (`utime` + `stime` in `stat`), read at the edges of
//! a measured window.

use std::fs;

/// The server's resident set size in KiB (`VmRSS` of `/proc/PID/status`).
pub(crate) fn rss_kib(pid: u32) -> Result<u64, String> {
    let path = format!("/proc/{pid}/status");
    let text = fs::read_to_string(&path).map_err(|e| format!("cannot read {path}: {e}"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("no VmRSS in {path}"))
}

/// The server's CPU time (user + system, all threads) in microseconds.
pub(crate) fn cpu_us(pid: u32) -> Result<u64, String> {
    let path = format!("/proc/{pid}/stat");
    let text = fs::read_to_string(&path).map_err(|e| format!("cannot read {path}: {e}"))?;
    // The command name (field 2) is in parentheses and may hold spaces:
    // count fields after the last ')'. utime and stime are fields 14 and 15.
    let rest = text
        .rsplit_once(')')
        .map(|(_, r)| r)
        .ok_or_else(|| format!("cannot parse {path}"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| -> Result<u64, String> {
        fields
            .get(n - 3)
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or_else(|| format!("cannot parse field {n} of {path}"))
    };
    let ticks = field(14)? + field(15)?;
    Ok(ticks * 1_000_000 / clock_ticks_per_second())
}

/// `sysconf(_SC_CLK_TCK)` without libc: the kernel passes it to every
/// process in the auxiliary vector (`AT_CLKTCK`, type 17), which
/// `/proc/self/auxv` shows as native-endian word pairs. Falls back to 100,
/// the value on every mainstream Linux configuration.
pub(crate) fn clock_ticks_per_second() -> u64 {
    const AT_CLKTCK: u64 = 17;
    const WORD: usize = std::mem::size_of::<usize>();
    let Ok(auxv) = fs::read("/proc/self/auxv") else {
        return 100;
    };
    let word = |b: &[u8]| -> u64 {
        let mut w = [0u8; 8];
        w[..WORD].copy_from_slice(&b[..WORD]);
        if WORD == 8 {
            u64::from_ne_bytes(w)
        } else {
            u64::from(u32::from_ne_bytes([w[0], w[1], w[2], w[3]]))
        }
    };
    auxv.chunks_exact(2 * WORD)
        .find(|pair| word(pair) == AT_CLKTCK)
        .map(|pair| word(&pair[WORD..]))
        .filter(|&hz| hz > 0)
        .unwrap_or(100)
}

/// The soft open-file limit of this process (`Max open files` in
/// `/proc/self/limits`), if it can be read.
pub(crate) fn open_file_limit() -> Option<u64> {
    let text = fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// How many local ports `connect` may pick from (`ip_local_port_range`).
pub(crate) fn ephemeral_ports() -> Option<u64> {
    let text = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let mut it = text.split_whitespace().map(|v| v.parse::<u64>().ok());
    let (lo, hi) = (it.next()??, it.next()??);
    Some(hi.saturating_sub(lo) + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_process() {
        let pid = std::process::id();
        assert!(rss_kib(pid).unwrap() > 0);
        cpu_us(pid).unwrap();
        assert!(clock_ticks_per_second() >= 1);
    }
}
