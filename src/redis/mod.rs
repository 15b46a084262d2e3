//! Redis as a sans-IO protocol: the pieces the cluster engine
//! (`src/engine.rs`, protocol.md section 11) drives over the loop's own
//! connections. Nothing here sees a socket or reads the clock.
//!
//! - [`resp`]: RESP2 values, an incremental decoder with hard bounds, and
//!   the command encoder.
//! - [`link`]: one connection's protocol (a pipelined command connection or
//!   a subscriber connection): replies matched in order, subscriptions
//!   confirmed, pings and their timeout, the reconnect back-off.
//! - [`slots`]: Redis Cluster's hash slots (CRC16, `{hashtag}`s) and the
//!   map of which master owns which, from `CLUSTER SLOTS`.
//!
//! This module names nothing else of the crate.

pub(crate) mod link;
pub(crate) mod resp;
pub(crate) mod slots;

#[cfg(test)]
mod tests;
