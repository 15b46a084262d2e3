//! Redis Cluster's key space: 16384 hash slots, each owned by one master.
//! A key's slot is CRC16-XMODEM of the key (or of its `{hashtag}`, the
//! first non-empty text between `{` and the next `}`) mod 16384; the map
//! comes from `CLUSTER SLOTS`.

use std::net::{IpAddr, SocketAddr};

use super::resp::Value;

/// Slots in a Redis Cluster.
pub(crate) const SLOTS: usize = 16384;

/// CRC16-CCITT as XMODEM computes it (polynomial 0x1021, initial 0), the
/// checksum Redis Cluster hashes keys with.
pub(crate) fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in data {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The slot of a key (a channel, for sharded pub/sub).
pub(crate) fn key_slot(key: &[u8]) -> u16 {
    let hashed = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = key.get(open + 1..)?;
            let close = rest.iter().position(|&b| b == b'}')?;
            (close > 0).then(|| rest.get(..close)).flatten()
        })
        .unwrap_or(key);
    crc16(hashed) % SLOTS as u16
}

/// Which master owns each slot.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct SlotMap {
    /// The masters, sorted, without duplicates.
    masters: Vec<SocketAddr>,
    /// For each slot, an index into `masters`, or `u16::MAX` if unowned.
    owner: Box<[u16]>,
}

impl std::fmt::Debug for SlotMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let unowned = self.owner.iter().filter(|&&o| o == u16::MAX).count();
        f.debug_struct("SlotMap")
            .field("masters", &self.masters)
            .field("unowned", &unowned)
            .finish()
    }
}

impl SlotMap {
    /// Reads a `CLUSTER SLOTS` reply: `[[start, end, [ip, port, id, ...],
    /// replicas...], ...]`. An empty ip means the node we asked (`asked`,
    /// whose ip is used). Masters announced by host name are skipped (and
    /// their slots left unowned): resolving a name would block the loop.
    /// `None` if the reply is not such an array.
    pub(crate) fn from_reply(reply: &Value, asked: SocketAddr) -> Option<Self> {
        let Value::Array(ranges) = reply else {
            return None;
        };
        let mut found: Vec<(usize, usize, SocketAddr)> = Vec::new();
        for range in ranges {
            let Value::Array(fields) = range else {
                return None;
            };
            let [start, end, master, ..] = fields.as_slice() else {
                return None;
            };
            let (Some(start), Some(end)) = (start.as_integer(), end.as_integer()) else {
                return None;
            };
            let (Ok(start), Ok(end)) = (usize::try_from(start), usize::try_from(end)) else {
                return None;
            };
            if start > end || end >= SLOTS {
                return None;
            }
            let Value::Array(node) = master else {
                return None;
            };
            let [ip, port, ..] = node.as_slice() else {
                return None;
            };
            let port = port.as_integer().and_then(|p| u16::try_from(p).ok())?;
            let ip = ip.as_bytes()?;
            let ip = if ip.is_empty() {
                asked.ip()
            } else {
                match std::str::from_utf8(ip)
                    .ok()
                    .and_then(|s| s.parse::<IpAddr>().ok())
                {
                    Some(ip) => ip,
                    None => {
                        log::warn!(
                            "redis cluster: master {:?} is not an IP address; its slots are skipped",
                            String::from_utf8_lossy(ip)
                        );
                        continue;
                    }
                }
            };
            found.push((start, end, SocketAddr::new(ip, port)));
        }
        let mut masters: Vec<SocketAddr> = found.iter().map(|f| f.2).collect();
        masters.sort_unstable();
        masters.dedup();
        let mut owner = vec![u16::MAX; SLOTS].into_boxed_slice();
        for (start, end, addr) in found {
            let i = masters.binary_search(&addr).ok()?;
            let i = u16::try_from(i).ok()?;
            for o in owner.get_mut(start..=end)? {
                *o = i;
            }
        }
        Some(Self { masters, owner })
    }

    /// The masters, sorted.
    pub(crate) fn masters(&self) -> &[SocketAddr] {
        &self.masters
    }

    /// The master owning `slot`, if any.
    pub(crate) fn master_of_slot(&self, slot: u16) -> Option<SocketAddr> {
        let i = *self.owner.get(usize::from(slot))?;
        self.masters.get(usize::from(i)).copied()
    }

    /// The master owning `key`'s slot.
    pub(crate) fn master_of(&self, key: &[u8]) -> Option<SocketAddr> {
        self.master_of_slot(key_slot(key))
    }
}

/// A `MOVED slot host:port` or `ASK slot host:port` error: the slot, the
/// address as Redis wrote it, and whether it was `ASK`.
pub(crate) fn redirect(error: &[u8]) -> Option<(u16, &str, bool)> {
    let text = std::str::from_utf8(error).ok()?;
    let mut words = text.split(' ');
    let ask = match words.next()? {
        "MOVED" => false,
        "ASK" => true,
        _ => return None,
    };
    let slot = words.next()?.parse::<u16>().ok()?;
    let addr = words.next()?;
    (usize::from(slot) < SLOTS).then_some((slot, addr, ask))
}
