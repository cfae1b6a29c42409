//! A closed standard output (`dissonance ... | head -1`) is the reader saying "enough",
//! not an error: commands end quietly with status 0 ([`is_broken_pipe`] on the error
//! path), and the long-running servers keep serving with their log going nowhere
//! ([`LogOut`]). Output goes through `write!` on a handle, never `println!`, which
//! panics on a closed pipe.

use std::error::Error;
use std::io::{self, Write};

/// True when `e`, or an error it wraps, is a write to a closed pipe.
pub fn is_broken_pipe(e: &(dyn Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            if io.kind() == io::ErrorKind::BrokenPipe {
                return true;
            }
        }
        if let Some(j) = e.downcast_ref::<serde_json::Error>() {
            if j.io_error_kind() == Some(io::ErrorKind::BrokenPipe) {
                return true;
            }
        }
        cur = e.source();
    }
    false
}

/// Writes `text` to standard output; `Err` (BrokenPipe included) is for the caller's
/// error path, which [`is_broken_pipe`] turns into a quiet exit.
pub fn print(text: &str) -> io::Result<()> {
    let mut out = io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()
}

/// Writes `text` to standard error, ignoring failure: a report on stderr that cannot be
/// written (stderr closed) has nowhere else to go, and must not panic as `eprint!` does.
pub fn eprint(text: &str) {
    let mut err = io::stderr().lock();
    let _ = err.write_all(text.as_bytes());
    let _ = err.flush();
}

/// The one stderr line of a server whose stdout was closed.
pub fn note_log_closed(command: &str) {
    eprint(&format!(
        "dissonance: {command}: standard output closed; {command} goes on, its log is discarded\n"
    ));
}

/// A server's log: writes to stdout until stdout is closed, then says so once on stderr
/// ([`note_log_closed`]) and discards the rest. Other write errors are returned.
pub struct LogOut {
    out: io::Stdout,
    command: &'static str,
    closed: bool,
}

impl LogOut {
    pub fn new(command: &'static str) -> LogOut {
        LogOut {
            out: io::stdout(),
            command,
            closed: false,
        }
    }

    /// Stdout was closed: nothing more is written.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    fn closed(&mut self, r: io::Result<()>) -> io::Result<()> {
        match r {
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                if !self.closed {
                    self.closed = true;
                    note_log_closed(self.command);
                }
                Ok(())
            }
            r => r,
        }
    }
}

impl Write for LogOut {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.closed {
            return Ok(buf.len());
        }
        let r = self.out.write_all(buf);
        self.closed(r).map(|()| buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        if self.closed {
            return Ok(());
        }
        let r = self.out.flush();
        self.closed(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broken_pipe_is_found_through_wrappers() {
        let io = io::Error::from(io::ErrorKind::BrokenPipe);
        assert!(is_broken_pipe(&io));
        let boxed: Box<dyn Error + Send + Sync> = Box::new(io);
        assert!(is_broken_pipe(boxed.as_ref()));
        let j = serde_json::Error::io(io::Error::from(io::ErrorKind::BrokenPipe));
        assert!(is_broken_pipe(&j));
        let other = io::Error::from(io::ErrorKind::PermissionDenied);
        assert!(!is_broken_pipe(&other));
        let text: Box<dyn Error + Send + Sync> = "Broken pipe".into();
        assert!(!is_broken_pipe(text.as_ref()));
    }
}
