//! The `deckhand` binary: agent, manager and operator CLI (see `deckhand --help`).
//!
//! The library forbids unsafe code; the only unsafe calls of the program are here: setting
//! SIGPIPE's disposition, which every Rust API marks unsafe (see `deckhand::cli::pipe`).

#![deny(unsafe_code)]

use nix::sys::signal::{signal, SigHandler, Signal};

#[allow(unsafe_code)]
fn sigpipe_default() {
    // SAFETY: setting a signal's disposition to SIG_DFL installs no handler of ours; it
    // runs before any other thread of this process exists.
    let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) };
}

#[allow(unsafe_code)]
fn sigpipe_ignore() {
    // SAFETY: SIG_IGN installs no handler of ours.
    let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigIgn) };
}

fn main() -> std::process::ExitCode {
    deckhand::cli::main(deckhand::cli::pipe::SigPipe {
        default_action: sigpipe_default,
        ignore: sigpipe_ignore,
    })
}
