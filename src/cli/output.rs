//! Small formatting helpers shared by the CLI's tables.

use std::time::Duration;

/// `16.0 GiB`.
pub fn bytes(n: u64) -> String {
    crate::config::schema::show_bytes(n)
}

/// `3s ago`, `2m 5s ago`, `never` for 0.
pub fn ago(unix_ms: i64) -> String {
    if unix_ms <= 0 {
        return "never".into();
    }
    let now = chrono::Utc::now().timestamp_millis();
    let secs = ((now - unix_ms).max(0) / 1000) as u64;
    format!(
        "{} ago",
        humantime::format_duration(Duration::from_secs(secs))
    )
}

/// `3weeks ago`: only the largest unit, for things that are long past (an image's build).
pub fn ago_coarse(unix_ms: i64) -> String {
    let full = ago(unix_ms);
    match full.split_whitespace().next() {
        Some(first) if full != "never" && full != "0s ago" => format!("{first} ago"),
        _ => full,
    }
}

/// Prints `value` as pretty JSON.
pub fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}
