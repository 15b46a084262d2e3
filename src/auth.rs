//! Password checks, run off the poll loop.
//!
//! A password check is slow on purpose (see [`crate::passwd`]), so the reactor
//! never runs one itself: it hands each `(user, password)` to a fixed pool of
//! worker threads (not one per connection) and picks the verdict up through its
//! control channel, woken by a `mio::Waker`. Meanwhile the session waiting for
//! the verdict stops processing input, so replies stay in order, and every
//! other session goes on. The broker bounds how many checks are queued
//! (`max_password_checks`, `ERR busy` past it) and flags a check whose
//! connection went, which a worker then skips.

use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread;

use log::warn;

use crate::broker::{AuthRequest, ConnId};
use crate::passwd::PasswordFile;

/// Decides whether a user name and password may log in (`--auth password`).
///
/// Implement it to check passwords against your own store; the server calls it
/// from its worker threads, never from the poll loop, so it may block.
pub trait Authenticator: Send + Sync + 'static {
    /// Whether `password` is right for `user`. Compare in constant time.
    fn verify(&self, user: &str, password: &[u8]) -> bool;
}

impl Authenticator for PasswordFile {
    fn verify(&self, user: &str, password: &[u8]) -> bool {
        Self::verify(self, user, password)
    }
}

/// A verdict on the way back to the loop.
#[derive(Debug)]
pub(crate) struct AuthVerdict {
    pub(crate) conn: ConnId,
    pub(crate) ticket: u32,
    pub(crate) ok: bool,
}

/// The worker pool.
pub(crate) struct AuthPool {
    tx: Option<Sender<AuthRequest>>,
    workers: Vec<thread::JoinHandle<()>>,
}

impl std::fmt::Debug for AuthPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthPool")
            .field("workers", &self.workers.len())
            .finish()
    }
}

impl AuthPool {
    /// Starts `threads` workers; each verdict is passed to `deliver`, which
    /// must hand it to the loop and wake it.
    pub(crate) fn start(
        authenticator: Arc<dyn Authenticator>,
        threads: usize,
        deliver: impl Fn(AuthVerdict) + Send + Sync + 'static,
    ) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel::<AuthRequest>();
        let rx: Arc<Mutex<Receiver<AuthRequest>>> = Arc::new(Mutex::new(rx));
        let deliver = Arc::new(deliver);
        let mut workers = Vec::new();
        for i in 0..threads.max(1) {
            let rx = Arc::clone(&rx);
            let auth = Arc::clone(&authenticator);
            let deliver = Arc::clone(&deliver);
            let worker = thread::Builder::new()
                .name(format!("switchboard-auth-{i}"))
                .spawn(move || {
                    loop {
                        // Hold the lock only to take one request.
                        let next = match rx.lock() {
                            Ok(guard) => guard.recv(),
                            Err(_) => return,
                        };
                        let Ok(req) = next else { return };
                        // Its connection went while it waited: nobody
                        // awaits the verdict, so the slow check is not run.
                        if req.cancelled.load(std::sync::atomic::Ordering::Relaxed) {
                            continue;
                        }
                        let ok = auth.verify(&req.user, &req.password);
                        deliver(AuthVerdict {
                            conn: req.conn,
                            ticket: req.ticket,
                            ok,
                        });
                    }
                })?;
            workers.push(worker);
        }
        Ok(Self {
            tx: Some(tx),
            workers,
        })
    }

    /// Queues a check.
    pub(crate) fn submit(&self, req: AuthRequest) {
        if let Some(tx) = &self.tx {
            if tx.send(req).is_err() {
                warn!("password workers are gone; login will time out");
            }
        }
    }
}

impl Drop for AuthPool {
    fn drop(&mut self) {
        self.tx = None;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}
