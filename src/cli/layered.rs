//! The file layer of the command line: `--config FILE` holds default flag values.
//!
//! The command line is parsed once; every flag of the chosen subcommand that was neither
//! given on the command line nor set through its `DECKHAND_*` variable is then taken from
//! the file (keys are long flag names; `snake_case` works too) and the command line is
//! parsed again with those values inserted right after the subcommand. So precedence is
//! flag > environment > file > default, with clap's own validation for file values.

use std::ffi::OsString;

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches};

use super::Cli;

#[derive(Debug)]
pub enum ParseError {
    Clap(clap::Error),
    /// The file cannot be read or has a key no command knows.
    File(String),
}

pub fn parse() -> Result<Cli, ParseError> {
    parse_from(std::env::args_os().collect())
}

pub fn parse_from(args: Vec<OsString>) -> Result<Cli, ParseError> {
    let cmd = Cli::command();
    let matches = cmd
        .clone()
        .try_get_matches_from(&args)
        .map_err(ParseError::Clap)?;
    let Some(path) = matches.get_one::<std::path::PathBuf>("config").cloned() else {
        return Cli::from_arg_matches(&matches).map_err(ParseError::Clap);
    };
    let text = std::fs::read_to_string(&path)
        .map_err(|e| ParseError::File(format!("cannot read --config {}: {e}", path.display())))?;
    let table: toml::Table = toml::from_str(&text)
        .map_err(|e| ParseError::File(format!("--config {}: {e}", path.display())))?;

    // The chosen subcommand path and its matches.
    let mut names = Vec::new();
    let mut leaf_cmd = cmd.clone();
    let mut leaf = &matches;
    while let Some((name, sub)) = leaf.subcommand() {
        names.push(name.to_string());
        leaf_cmd = leaf_cmd
            .find_subcommand(name)
            .cloned()
            .ok_or_else(|| ParseError::File(format!("unknown subcommand {name}")))?;
        leaf = sub;
    }

    let mut extra: Vec<OsString> = Vec::new();
    for (raw_key, value) in &table {
        let key = raw_key.replace('_', "-");
        let arg = leaf_cmd
            .get_arguments()
            .chain(cmd.get_arguments())
            .find(|a| a.get_long() == Some(key.as_str()));
        let Some(arg) = arg else {
            if known_anywhere(&cmd, &key) {
                continue; // a setting for another subcommand
            }
            return Err(ParseError::File(format!(
                "--config {}: unknown setting `{raw_key}` (keys are long flag names, see --help)",
                path.display()
            )));
        };
        if key == "config" {
            continue;
        }
        let id = arg.get_id().as_str();
        if matches!(
            source(leaf, id),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        ) {
            continue;
        }
        let takes_value = arg.get_action().takes_values();
        let values: Vec<&toml::Value> = match value {
            toml::Value::Array(items) => items.iter().collect(),
            v => vec![v],
        };
        for v in values {
            match (v, takes_value) {
                (toml::Value::Boolean(true), false) => extra.push(format!("--{key}").into()),
                (toml::Value::Boolean(false), false) => {}
                (_, false) => {
                    return Err(ParseError::File(format!(
                        "--config {}: `{raw_key}` is a switch; write `{raw_key} = true` or `false`",
                        path.display()
                    )))
                }
                (toml::Value::String(s), true) => extra.push(format!("--{key}={s}").into()),
                (toml::Value::Table(_) | toml::Value::Array(_), true) => {
                    return Err(ParseError::File(format!(
                        "--config {}: `{raw_key}` must be a plain value",
                        path.display()
                    )))
                }
                (other, true) => extra.push(format!("--{key}={other}").into()),
            }
        }
    }
    if extra.is_empty() {
        return Cli::from_arg_matches(&matches).map_err(ParseError::Clap);
    }
    let at = insertion_point(&args, &names);
    let mut layered = args[..at].to_vec();
    layered.extend(extra);
    layered.extend_from_slice(&args[at..]);
    let matches = cmd
        .try_get_matches_from(&layered)
        .map_err(ParseError::Clap)?;
    Cli::from_arg_matches(&matches).map_err(ParseError::Clap)
}

fn source(m: &ArgMatches, id: &str) -> Option<ValueSource> {
    m.try_contains_id(id).ok()?;
    m.value_source(id)
}

fn known_anywhere(cmd: &clap::Command, long: &str) -> bool {
    cmd.get_arguments().any(|a| a.get_long() == Some(long))
        || cmd.get_subcommands().any(|s| known_anywhere(s, long))
}

/// The index just after the last subcommand name on the command line.
fn insertion_point(args: &[OsString], names: &[String]) -> usize {
    let mut at = 1;
    for name in names {
        if let Some(i) = args[at..]
            .iter()
            .position(|a| a.to_str() == Some(name.as_str()))
        {
            at += i + 1;
        }
    }
    at
}
