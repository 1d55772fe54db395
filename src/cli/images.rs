//! `deckhand images`: the images present on each agent (DRMAA2 job categories), through the
//! manager, which asks the agents now. Reads, never pulls.

use std::process::ExitCode;

use clap::Args;
use comfy_table::{presets::NOTHING, Table};
use serde::Serialize;

use super::common::ManagerArgs;
use super::output::{ago_coarse, bytes, print_json};
use crate::wire::pb::{ImageInfo, ListAgentImagesRequest};

#[derive(Debug, Clone, Args)]
pub struct ImagesArgs {
    #[command(flatten)]
    pub target: ManagerArgs,

    /// Only this agent's images.
    #[arg(long, value_name = "ID")]
    pub agent: Option<String>,

    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// One image under one reference, on one agent, in `images --json`.
#[derive(Debug, Serialize)]
pub struct ImageView {
    pub agent: String,
    /// `repository:tag`; empty for an untagged image.
    pub reference: String,
    pub repository: String,
    pub tag: String,
    /// `sha256:…`
    pub id: String,
    pub size_bytes: u64,
    pub created_at_ms: i64,
}

impl From<ImageInfo> for ImageView {
    fn from(i: ImageInfo) -> Self {
        let r = crate::util::image::ImageRef::split(&i.reference);
        let (repository, tag) = (r.name.to_string(), r.tag.unwrap_or("").to_string());
        Self {
            agent: i.agent_id,
            repository,
            tag,
            reference: i.reference,
            id: i.image_id,
            size_bytes: i.size_bytes,
            created_at_ms: i.created_at_ms,
        }
    }
}

/// The 12 hex digits `docker images` shows.
fn short_id(id: &str) -> &str {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    hex.get(..12).unwrap_or(hex)
}

pub async fn run(args: ImagesArgs) -> anyhow::Result<ExitCode> {
    let agent_id = args.agent.clone().unwrap_or_default();
    let resp = args
        .target
        .call(|mut c| {
            let agent_id = agent_id.clone();
            async move {
                c.list_images(ListAgentImagesRequest { agent_id })
                    .await
                    .map(|r| r.into_inner())
            }
        })
        .await?;
    for f in &resp.failures {
        eprintln!(
            "warning: agent `{}` did not list its images: {}",
            f.agent_id, f.error
        );
    }
    let images: Vec<ImageView> = resp.images.into_iter().map(ImageView::from).collect();
    if args.json {
        print_json(&images)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut t = Table::new();
    t.load_preset(NOTHING);
    t.set_header(["AGENT", "REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"]);
    let none = |s: &str| {
        if s.is_empty() {
            "<none>".to_string()
        } else {
            s.to_string()
        }
    };
    for i in &images {
        t.add_row([
            i.agent.clone(),
            none(&i.repository),
            none(&i.tag),
            short_id(&i.id).to_string(),
            ago_coarse(i.created_at_ms),
            bytes(i.size_bytes),
        ]);
    }
    println!("{t}");
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_split_at_the_tag_not_at_a_registry_port() {
        let split_reference = |r: &str| {
            let v = ImageView::from(ImageInfo {
                reference: r.to_string(),
                ..Default::default()
            });
            (v.repository, v.tag)
        };
        let pair = |a: &str, b: &str| (a.to_string(), b.to_string());
        assert_eq!(split_reference("busybox:latest"), pair("busybox", "latest"));
        assert_eq!(
            split_reference("127.0.0.1:5000/team/app:1.2"),
            pair("127.0.0.1:5000/team/app", "1.2")
        );
        assert_eq!(
            split_reference("127.0.0.1:5000/app"),
            pair("127.0.0.1:5000/app", "")
        );
        assert_eq!(split_reference(""), pair("", ""));
        assert_eq!(short_id("sha256:0123456789abcdef"), "0123456789ab");
    }
}
