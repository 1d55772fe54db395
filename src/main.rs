//! The `deckhand` binary: agent, manager and operator CLI (see `deckhand --help`).

fn main() -> std::process::ExitCode {
    deckhand::cli::main()
}
