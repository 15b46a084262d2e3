//! Small helpers for nonblocking I/O results.

use std::io;

/// Whether an I/O error means "try again when ready".
pub(crate) fn is_would_block(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}
