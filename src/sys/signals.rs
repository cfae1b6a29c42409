//! Signals for the commands that finish their output when stopped (dump, voice, sniff):
//! Ctrl-C or SIGTERM only raises a flag, the command's loop notices it and ends as at
//! the end of its input (JSON array closed, summary printed, files renamed). A second
//! signal kills as the default would, so a stuck process can still be stopped.
//!
//! Input that can block (a pipe, a FIFO, stdin) is read through [`Interruptible`], which
//! waits for data in short polls so the flag is seen even when nothing arrives.
//!
//! Runtimes on tokio (serve, client, proxy, simulate, replay) use tokio's own signal
//! streams instead; [`ignore_usr1`] is for every command but `serve`, the only one that
//! handles SIGUSR1 (the default action would kill the process).

use std::io::{self, Read};
use std::sync::atomic::{AtomicI32, Ordering};

/// The first SIGINT/SIGTERM received (0: none).
static REQUESTED: AtomicI32 = AtomicI32::new(0);

#[cfg(unix)]
extern "C" fn on_signal(sig: libc::c_int) {
    if REQUESTED.swap(sig, Ordering::SeqCst) != 0 {
        // SAFETY: signal(2) and raise(3) are async-signal-safe.
        unsafe {
            libc::signal(sig, libc::SIG_DFL);
            libc::raise(sig);
        }
    }
}

/// Makes SIGINT and SIGTERM raise the flag [`requested`] returns instead of killing.
#[cfg(unix)]
pub fn install() -> io::Result<()> {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: a zeroed sigaction is valid; the handler only touches an atomic and
        // async-signal-safe calls. SA_RESTART: blocking reads are polled (see Interruptible).
        let r = unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut())
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(not(unix))]
pub fn install() -> io::Result<()> {
    Ok(())
}

/// SIGUSR1 ignored: only `serve` handles it; to any other command it must not be fatal.
pub fn ignore_usr1() {
    #[cfg(unix)]
    // SAFETY: setting a disposition to SIG_IGN has no preconditions.
    unsafe {
        libc::signal(libc::SIGUSR1, libc::SIG_IGN);
    }
}

/// The signal that asked to stop (SIGINT or SIGTERM), once one arrived after [`install`].
pub fn requested() -> Option<i32> {
    match REQUESTED.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

/// The conventional exit status of a command stopped by `sig` (128 + its number).
pub fn exit_status(sig: i32) -> i32 {
    128 + sig
}

/// A reader of a pipe, FIFO or terminal that ends (reads 0 bytes) once a stop was
/// [`requested`] and nothing is waiting to be read: the command then finishes as at
/// the end of its input. Reads the descriptor directly, without a buffer of its own, so
/// readiness is the descriptor's.
#[cfg(unix)]
pub struct Interruptible<R> {
    inner: R,
    fd: std::os::fd::RawFd,
}

#[cfg(unix)]
impl<R: Read + std::os::fd::AsRawFd> Interruptible<R> {
    pub fn new(inner: R) -> Self {
        let fd = inner.as_raw_fd();
        Interruptible { inner, fd }
    }
}

#[cfg(unix)]
impl<R: Read> Read for Interruptible<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut pfd = libc::pollfd {
                fd: self.fd,
                events: libc::POLLIN,
                revents: 0,
            };
            // Short polls: the stop flag is looked at ten times a second while idle.
            let wait = if requested().is_some() { 0 } else { 100 };
            // SAFETY: one valid pollfd for the duration of the call.
            let n = unsafe { libc::poll(&mut pfd, 1, wait) };
            if n > 0 {
                return self.inner.read(buf);
            }
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            if requested().is_some() {
                return Ok(0);
            }
        }
    }
}

/// Standard input as an unbuffered file, for [`Interruptible`] (std's `Stdin` keeps a
/// buffer of its own, which poll(2) cannot see).
#[cfg(unix)]
pub fn stdin_file() -> io::Result<std::fs::File> {
    use std::os::fd::FromRawFd;
    // SAFETY: dup(2) has no preconditions; on success the new descriptor is ours alone,
    // so the File may close it. Nothing else in the process reads stdin meanwhile.
    unsafe {
        let fd = libc::dup(0);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(std::fs::File::from_raw_fd(fd))
    }
}
