//! Process plumbing: signals (Ctrl-C, SIGTERM, SIGUSR1) and reading that a stop can end;
//! the units every command writes the same way (durations, addresses).

pub mod signals;
pub mod units;
