//! Process plumbing: signals (Ctrl-C, SIGTERM, SIGUSR1) and reading that a stop can end.

pub mod signals;
