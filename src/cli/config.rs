//! `deckhand config put|get|set|unset`: the namespace's cluster settings in etcd.
//!
//! Everything written is validated first against the schema; one bad key or value refuses
//! the whole write, naming every problem, and nothing is written.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use etcd_client::{DeleteOptions, GetOptions, Txn, TxnOp};

use super::common::EtcdArgs;
use super::output::print_json;
use crate::cluster::keys::validate_name;
use crate::config::tree::{self, FlatTree};
use crate::config::{schema, tables};

/// etcd refuses transactions with more operations than this by default.
const MAX_TXN_OPS: usize = 128;

#[derive(Debug, Clone, Args)]
pub struct ConfigArgs {
    #[command(flatten)]
    pub etcd: EtcdArgs,

    /// Work on this agent's overrides (`nodes/agents/<ID>/config/`) instead of the
    /// cluster-wide settings.
    #[arg(long, global = true, env = "DECKHAND_CONFIG_AGENT", value_name = "ID")]
    pub agent: Option<String>,

    #[command(subcommand)]
    pub action: ConfigAction,
}

#[derive(Debug, Clone, Subcommand)]
pub enum ConfigAction {
    /// Replace the settings with a TOML file (validated first; `--merge` keeps keys the
    /// file does not mention).
    Put {
        /// The TOML file (`[agent] heartbeat_interval = "5s"`, …).
        file: PathBuf,
        /// Keep the keys the file does not mention (default: the file replaces them all).
        #[arg(long)]
        merge: bool,
    },
    /// Print the settings (or the sub-tree or value at KEY, like `agent/heartbeat_interval`).
    Get {
        /// A setting or a sub-tree (`agent`, `docker/volumes`); default: all.
        key: Option<String>,
        /// Print JSON instead of TOML.
        #[arg(long)]
        json: bool,
    },
    /// Set one setting.
    Set {
        /// The setting (`agent/heartbeat_interval`), or a table of them
        /// (`vast_api/offer_filters`, `docker/volumes/data`).
        key: String,
        /// Its value; for a table, a TOML inline table (`'{gpu_name = {in = ["RTX_4090"]}}'`)
        /// that replaces the whole table.
        value: String,
    },
    /// Remove one setting (or a whole sub-tree).
    Unset {
        /// The setting or sub-tree.
        key: String,
    },
    /// List every known setting with its meaning.
    Keys,
}

pub async fn run(args: ConfigArgs) -> anyhow::Result<ExitCode> {
    if let ConfigAction::Keys = args.action {
        for k in schema::KEYS {
            println!("{:<32} {}", k.pattern, k.help);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let keys = args.etcd.keys()?;
    let prefix = match &args.agent {
        Some(id) => {
            validate_name("--agent", id).map_err(anyhow::Error::msg)?;
            keys.agent_config(id)
        }
        None => keys.config(),
    };
    match args.action {
        ConfigAction::Put { file, merge } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let table: toml::Table = toml::from_str(&text)
                .with_context(|| format!("{} is not valid TOML", file.display()))?;
            let flat = tree::flatten(&table)?;
            refuse_invalid(&flat)?;
            let mut client = args.etcd.connect().await?;
            if merge {
                // What the layer will hold: entries the file touches must be whole then.
                let mut merged = read_layer(&mut client, &prefix).await?;
                merged.extend(flat.clone());
                let touched: Vec<String> = flat.keys().map(|k| entry_of(k)).collect();
                refuse_incomplete(&merged, &touched)?;
            } else {
                refuse_incomplete(&flat, &[])?;
            }
            let mut ops = Vec::new();
            if !merge {
                // etcd refuses a delete-range overlapping a put in one transaction: delete
                // the keys the file no longer has, one by one.
                let existing = client
                    .get(
                        prefix.clone(),
                        Some(GetOptions::new().with_prefix().with_keys_only()),
                    )
                    .await
                    .context("reading current settings from etcd")?;
                for kv in existing.kvs() {
                    let key = kv.key_str().unwrap_or_default();
                    if !flat.contains_key(&key[prefix.len().min(key.len())..]) {
                        ops.push(TxnOp::delete(key.to_string(), None));
                    }
                }
            }
            ops.extend(
                flat.iter()
                    .map(|(k, v)| TxnOp::put(format!("{prefix}{k}"), v.clone(), None)),
            );
            if ops.len() > MAX_TXN_OPS {
                bail!(
                    "{} settings are more than one etcd transaction takes ({MAX_TXN_OPS}); split the file and use --merge",
                    flat.len()
                );
            }
            client
                .txn(Txn::new().and_then(ops))
                .await
                .context("writing settings to etcd")?;
            eprintln!("wrote {} settings under {prefix}", flat.len());
        }
        ConfigAction::Set { key, value } => {
            let key = key.trim_matches('/').to_string();
            // A whole collection entry at once: `docker/volumes/data '{src="/srv", dest="/data"}'`;
            // any other table of the schema the same way: `vast_api/offer_filters '{…}'`.
            let entry = schema::collection_prefixes()
                .find(|p| key.starts_with(p.as_str()) && !key[p.len()..].contains('/'));
            let table = entry.is_some() || tables::is_table(&key);
            let writes: FlatTree = if table {
                tables::flatten_value(&key, &value).map_err(|e| match entry {
                    Some(_) => anyhow::anyhow!("`{key}` is an entry; give its fields as a TOML inline table, like '{{src = \"/srv\", dest = \"/data\"}}'"),
                    None => anyhow::Error::from(e),
                })?
            } else {
                [(key.clone(), value)].into_iter().collect()
            };
            // Validated as a whole before etcd is asked anything: every bad field or operator
            // is named, and nothing is written.
            refuse_invalid(&writes)?;
            let mut client = args.etcd.connect().await?;
            let mut current = read_layer(&mut client, &prefix).await?;
            let mut stale: Vec<String> = Vec::new();
            if table {
                // The table's value replaces what was under it.
                let under = format!("{key}/");
                stale = current
                    .keys()
                    .filter(|k| k.starts_with(&under))
                    .cloned()
                    .collect();
                current.retain(|k, _| !k.starts_with(&under));
            }
            current.extend(writes.clone());
            let mut touched: Vec<String> =
                writes.keys().chain(&stale).map(|k| entry_of(k)).collect();
            touched.push(entry_of(&key));
            refuse_incomplete(&current, &touched)?;
            // Fields of a replaced entry that the new value does not have are deleted one by
            // one (etcd refuses a delete-range overlapping a put in one transaction).
            let mut ops: Vec<TxnOp> = stale
                .iter()
                .filter(|k| !writes.contains_key(*k))
                .map(|k| TxnOp::delete(format!("{prefix}{k}"), None))
                .collect();
            ops.extend(
                writes
                    .iter()
                    .map(|(k, v)| TxnOp::put(format!("{prefix}{k}"), v.clone(), None)),
            );
            if ops.len() > MAX_TXN_OPS {
                bail!(
                    "`{key}`: {} settings are more than one etcd transaction takes ({MAX_TXN_OPS}); set its parts one by one",
                    writes.len()
                );
            }
            client
                .txn(Txn::new().and_then(ops))
                .await
                .context("writing the setting to etcd")?;
        }
        ConfigAction::Unset { key } => {
            let key = key.trim_matches('/');
            let mut client = args.etcd.connect().await?;
            let exact = client
                .delete(format!("{prefix}{key}"), None)
                .await?
                .deleted();
            let under = client
                .delete(
                    format!("{prefix}{key}/"),
                    Some(DeleteOptions::new().with_prefix()),
                )
                .await?
                .deleted();
            if exact + under == 0 {
                bail!("`{key}` is not set under {prefix}");
            }
        }
        ConfigAction::Get { key, json } => {
            let mut client = args.etcd.connect().await?;
            let mut flat = read_layer(&mut client, &prefix).await?;
            for (k, v) in flat.iter_mut() {
                if schema::is_secret(k) {
                    *v = "***".into();
                }
            }
            print_tree(&flat, key.as_deref(), json)?;
        }
        ConfigAction::Keys => {}
    }
    Ok(ExitCode::SUCCESS)
}

/// Validates every key; lists all problems at once.
fn refuse_invalid(flat: &FlatTree) -> anyhow::Result<()> {
    refuse(
        flat.iter()
            .filter_map(|(k, v)| schema::validate(k, v).err().map(|e| e.to_string()))
            .collect(),
    )
}

/// Fails naming every problem, if there are any.
fn refuse(problems: Vec<String>) -> anyhow::Result<()> {
    if !problems.is_empty() {
        bail!(
            "nothing written; {} problem(s):\n  {}",
            problems.len(),
            problems.join("\n  ")
        );
    }
    Ok(())
}

/// The settings under `prefix`, keys relative to it.
async fn read_layer(client: &mut etcd_client::Client, prefix: &str) -> anyhow::Result<FlatTree> {
    let resp = client
        .get(prefix, Some(GetOptions::new().with_prefix()))
        .await
        .context("reading settings from etcd")?;
    let mut flat = FlatTree::new();
    for kv in resp.kvs() {
        if let (Ok(k), Ok(v)) = (kv.key_str(), kv.value_str()) {
            flat.insert(k[prefix.len()..].to_string(), v.to_string());
        }
    }
    Ok(flat)
}

/// The collection entry a key belongs to (`docker/volumes/v/src` → `docker/volumes/v`), or
/// the key itself.
fn entry_of(key: &str) -> String {
    schema::collection_prefixes()
        .find(|p| key.starts_with(p.as_str()))
        .and_then(|p| key[p.len()..].split('/').next().map(|e| format!("{p}{e}")))
        .unwrap_or_else(|| key.to_string())
}

/// Refuses entries that are incomplete or clash with each other (a volume without `dest`,
/// two registries for one host), as the agent would ignore them. Only problems in the
/// `touched` entries count (all when empty), so a write is not blocked by an unrelated
/// entry that was already broken.
fn refuse_incomplete(flat: &FlatTree, touched: &[String]) -> anyhow::Result<()> {
    let (_, problems) = crate::config::cluster::ClusterConfig::from_tree(flat);
    refuse(
        problems
            .iter()
            .filter(|p| touched.is_empty() || touched.contains(&entry_of(p.key())))
            .map(ToString::to_string)
            .collect(),
    )
}

fn print_tree(flat: &FlatTree, key: Option<&str>, json: bool) -> anyhow::Result<()> {
    let Some(key) = key.map(|k| k.trim_matches('/')) else {
        let table = tree::unflatten(flat);
        if json {
            return print_json(&table);
        }
        print!("{}", toml::to_string(&table)?);
        return Ok(());
    };
    if let Some(v) = flat.get(key) {
        if json {
            return print_json(&schema::typed_value(key, v));
        }
        println!("{v}");
        return Ok(());
    }
    let sub = tree::subtree(flat, key);
    if sub.is_empty() {
        bail!("`{key}` is not set");
    }
    let mut table = tree::unflatten(&sub);
    for seg in key.split('/') {
        table = match table.remove(seg) {
            Some(toml::Value::Table(t)) => t,
            Some(toml::Value::Array(a)) => {
                if json {
                    return print_json(&a);
                }
                let mut wrap = toml::Table::new();
                wrap.insert(seg.into(), toml::Value::Array(a));
                print!("{}", toml::to_string(&wrap)?);
                return Ok(());
            }
            _ => bail!("`{key}` is not set"),
        };
    }
    if json {
        return print_json(&table);
    }
    print!("{}", toml::to_string(&table)?);
    Ok(())
}
