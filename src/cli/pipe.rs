//! Writing to a closed pipe (`deckhand ps --json | head -1`): a command ends as other Unix
//! tools do, killed quietly by SIGPIPE (the shell reports status 141), instead of Rust's
//! default of ignoring the signal and panicking in `println!` on the EPIPE error.
//!
//! The daemons and the benchmarks keep SIGPIPE ignored: a daemon must survive a peer that
//! went away, and a benchmark must remove the cluster it made before it exits. Their output
//! to a closed stdout ends them through [`quiet_on_broken_pipe`] instead: the panic of the
//! failed print unwinds (cleaning up as it goes) without a message, and the process exits
//! with 141 too.

/// The status a shell reports for a process killed by SIGPIPE (128 + 13).
pub const BROKEN_PIPE_STATUS: u8 = 141;

/// How the binary sets SIGPIPE's disposition. Changing it is `unsafe` in every Rust API
/// (libc's `signal`), and the library forbids unsafe code: the two calls live in
/// `src/main.rs`, which hands them in.
#[derive(Debug, Clone, Copy)]
pub struct SigPipe {
    /// Gives SIGPIPE its default action (end the process quietly), as at the start of any C
    /// program.
    pub default_action: fn(),
    /// Ignores SIGPIPE again (Rust's own default): writes to a closed pipe or socket fail
    /// with EPIPE instead of ending the process.
    pub ignore: fn(),
}

/// Whether a panic payload is the standard library's failed print to a closed stdout or
/// stderr (`failed printing to stdout: Broken pipe (os error 32)`).
pub fn is_broken_pipe(message: &str) -> bool {
    message.starts_with("failed printing to std") && message.contains("Broken pipe")
}

fn payload_text(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("")
}

/// Installs a panic hook that stays silent for a failed print to a closed pipe and leaves
/// every other panic to the default hook.
pub fn quiet_on_broken_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if is_broken_pipe(payload_text(info.payload())) {
            return;
        }
        default(info);
    }));
}

/// Whether a caught panic was a failed print to a closed pipe.
pub fn panicked_on_broken_pipe(payload: &(dyn std::any::Any + Send)) -> bool {
    is_broken_pipe(payload_text(payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_failed_print_to_a_closed_pipe_counts_as_one() {
        assert!(is_broken_pipe(
            "failed printing to stdout: Broken pipe (os error 32)"
        ));
        assert!(!is_broken_pipe("failed printing to stdout: No space left"));
        assert!(!is_broken_pipe("index out of bounds"));
    }
}
