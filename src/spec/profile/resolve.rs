//! Resolving a profile kernel's template: its profile and constants become ordinary
//! template fields (image, command, user, hostname, working dir, network, GPUs, env) and a
//! [`ProfileRun`] with what a plain kernel does not have. The order of the checks here is
//! the order in which a request's problems are reported.

use std::collections::BTreeMap;

use super::checks::{
    command_line, progress_regex, resources, results_path, s3_location, s3_settings,
};
use super::{
    find, has_rdma, Network, Profile, ProfileRun, RegistryLogin, CLUSTER, MAX_INSTANCES, RDMA_DIR,
};
use crate::config::ClusterConfig;
use crate::spec::constants::{self, check_name, holds_secret, substitute};
use crate::spec::paths::container_path;
use crate::spec::{Cluster, FieldRules, Span, SpecError, Template};

/// Longest value of one constant.
const MAX_CONSTANT: usize = 64 * 1024;

/// `template` with its profile and constants resolved into ordinary fields, and what the
/// kernel has beyond them; a template without a profile comes back as it is (and may not
/// use the profile-only fields).
pub fn resolve(
    t: &Template,
    cfg: &ClusterConfig,
    rules: &dyn FieldRules,
) -> Result<(Template, Option<ProfileRun>), SpecError> {
    if t.instances > 0 && !t.profile.starts_with("docker-cluster") {
        return Err(SpecError::invalid(
            "instances",
            format!(
                "needs a cluster profile ({})",
                CLUSTER
                    .iter()
                    .map(|(n, ..)| *n)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    if t.profile.is_empty() {
        for (field, set) in [
            ("constants", !t.constants.is_empty()),
            ("resources", !t.resources.is_empty()),
            ("results", !t.results.is_empty()),
            ("results_path", !t.results_path.is_empty()),
        ] {
            if set {
                return Err(SpecError::invalid(
                    field,
                    "belongs to a task profile: give one (`--profile docker-batch`, …)",
                ));
            }
        }
        return Ok((t.clone(), None));
    }
    let profile = find(&t.profile, cfg)?;
    if t.constants.len() > 256 {
        return Err(SpecError::invalid("constants", "at most 256 constants"));
    }
    for (k, v) in &t.constants {
        let field = format!("constants[{k}]");
        check_name(&field, k)?;
        if v.contains('\0') || v.len() > MAX_CONSTANT {
            return Err(SpecError::invalid(
                field,
                format!("at most {MAX_CONSTANT} bytes without NUL"),
            ));
        }
    }
    let mut all = profile.constants.clone();
    all.extend(t.constants.clone());
    let c = substitute(&all)?;
    let get = |k: &str| c.get(k).map(|v| v.trim()).unwrap_or("");
    let mut e = t.clone();
    e.profile.clear();
    e.constants.clear();
    e.resources.clear();
    e.results.clear();
    e.results_path.clear();

    e.image = if t.image.is_empty() {
        image(get("DOCKER_SRV"), get("DOCKER_REPO"), get("DOCKER_TAG"))?
    } else {
        super::image_arg::given_image(&t.image, &profile, &t.constants)?
    };
    e.command = if t.command.is_empty() {
        command_line("constants[DOCKER_CMD]", get("DOCKER_CMD"))?
    } else {
        super::image_arg::given_command(&t.command, &t.constants)?
    };
    let cluster = cluster(t, &profile, &c, &mut e.command)?;
    e.user = once("user", &t.user, "DOCKER_USER", get("DOCKER_USER"))?;
    e.hostname = once("hostname", &t.hostname, "DOCKER_HOST", get("DOCKER_HOST"))?;
    e.working_dir = once(
        "working_dir",
        &t.working_dir,
        "DOCKER_WORKDIR",
        get("DOCKER_WORKDIR"),
    )?;
    if !t.network_mode.is_empty() {
        return Err(SpecError::invalid(
            "network_mode",
            format!("profile `{}` decides the network", profile.name),
        ));
    }
    e.network_mode = match &profile.network {
        // A cluster's instances are on the network made for it, `internal` without one.
        _ if profile.cluster => String::new(),
        Network::None => "none".into(),
        Network::Default => String::new(),
        Network::Named(n) => n.clone(),
    };
    let no_gpus = t.gpus.trim().is_empty() || t.gpus.trim() == "0";
    if profile.gpus {
        if t.gpus.trim() == "0" {
            return Err(SpecError::invalid(
                "gpus",
                format!("profile `{}` needs at least one GPU", profile.name),
            ));
        }
        if no_gpus {
            e.gpus = "1".into();
        }
    } else if !no_gpus {
        return Err(SpecError::invalid(
            "gpus",
            format!(
                "profile `{}` has no GPUs; use docker-nvidia-batch or docker-nvidia-network",
                profile.name
            ),
        ));
    }
    for (k, v) in &c {
        if constants::is_known(k) {
            continue;
        }
        if t.env.contains_key(k) || t.secret_env.contains_key(k) {
            return Err(SpecError::invalid(
                format!("constants[{k}]"),
                "also given as an environment variable; give it once",
            ));
        }
        if holds_secret(k, v, &c) {
            e.secret_env.insert(k.clone(), v.clone());
        } else {
            e.env.insert(k.clone(), v.clone());
        }
    }
    let mut run = ProfileRun {
        name: profile.name.clone(),
        rdma: profile.rdma,
        cluster,
        ..Default::default()
    };
    for i in 1..=3 {
        let name = format!("DOCKER_PROGRESS{i}");
        let re = c.get(&name).map(String::as_str).unwrap_or("");
        if !re.is_empty() {
            progress_regex(&name, re)?;
            run.progress.push(re.to_string());
        }
    }
    run.shutdown_given = !get("DOCKER_SHUTDOWN_CMD").is_empty();
    run.shutdown_command = match get("DOCKER_SHUTDOWN_CMD") {
        "" => "/bin/true".into(),
        s => s.into(),
    };
    run.resources_path = match get("RESOURCES_PATH") {
        "" => "/job".into(),
        p => p.trim_end_matches('/').to_string(),
    };
    container_path("constants[RESOURCES_PATH]", &run.resources_path)?;
    crate::config::schema::check_container_dest(&run.resources_path)
        .map_err(|r| SpecError::invalid("constants[RESOURCES_PATH]", r))?;
    run.ssh_key = get("DOCKER_SSH").to_string();
    match (profile.ssh, run.ssh_key.is_empty()) {
        (true, true) => {
            return Err(SpecError::invalid(
                "constants[DOCKER_SSH]",
                format!("profile `{}` needs the public key allowed in", profile.name),
            ))
        }
        (false, false) => {
            return Err(SpecError::invalid(
                "constants[DOCKER_SSH]",
                format!(
                    "profile `{}` has no SSH access; use docker-network-ssh",
                    profile.name
                ),
            ))
        }
        (true, false) => {
            russh::keys::PublicKey::from_openssh(&run.ssh_key).map_err(|e| {
                SpecError::invalid(
                    "constants[DOCKER_SSH]",
                    format!("not an OpenSSH public key (`ssh-ed25519 AAAA…`): {e}"),
                )
            })?;
        }
        (false, true) => {}
    }
    run.registry = match (
        get("DOCKER_REGISTRY_LOGIN"),
        get("DOCKER_REGISTRY_PASSWORD"),
    ) {
        ("", "") => None,
        ("", _) => {
            return Err(SpecError::invalid(
                "constants[DOCKER_REGISTRY_LOGIN]",
                "a registry password needs its login",
            ))
        }
        (_, "") => {
            return Err(SpecError::invalid(
                "constants[DOCKER_REGISTRY_PASSWORD]",
                "a registry login needs its password",
            ))
        }
        (u, p) => Some(RegistryLogin {
            username: u.into(),
            password: p.into(),
        }),
    };
    run.no_cpu_boost = match get("QARNOT_DISABLE_CPU_BOOST")
        .to_ascii_lowercase()
        .as_str()
    {
        "" | "false" | "0" | "no" => false,
        "true" | "1" | "yes" => true,
        other => {
            return Err(SpecError::invalid(
                "constants[QARNOT_DISABLE_CPU_BOOST]",
                format!("`{other}`: expected true or false"),
            ))
        }
    };
    if run.no_cpu_boost && t.cpus <= 0.0 {
        return Err(SpecError::invalid(
            "cpus",
            "QARNOT_DISABLE_CPU_BOOST caps the kernel at its cpus: give them (`--cpus 2`)",
        ));
    }
    if run.rdma && !has_rdma() {
        return Err(SpecError::forbidden(
            "profile",
            format!(
                "`{}` needs RDMA (RoCE) devices; this agent has none ({RDMA_DIR} is empty or missing)",
                profile.name
            ),
        ));
    }
    run.resources = resources(&t.resources, cfg, rules)?;
    if !t.results.is_empty() {
        let loc = s3_location("results", &t.results)?;
        s3_settings("results", cfg)?;
        run.results = Some(loc);
    }
    run.results_path = results_path(&t.results_path, &run.resources_path)?;
    Ok((e, Some(run)))
}

/// A cluster profile's instances and commands (the master's replaces `command` when
/// given); the cluster constants are refused on other profiles.
fn cluster(
    t: &Template,
    profile: &Profile,
    c: &BTreeMap<String, String>,
    command: &mut Vec<String>,
) -> Result<Option<Cluster>, SpecError> {
    let get = |k: &str| c.get(k).map(|v| v.trim()).unwrap_or("");
    if !profile.cluster {
        for k in ["DOCKER_CMD_MASTER", "DOCKER_CMD_WORKER"] {
            if !get(k).is_empty() {
                return Err(SpecError::invalid(
                    format!("constants[{k}]"),
                    format!(
                        "belongs to the cluster profiles; profile `{}` runs one instance",
                        profile.name
                    ),
                ));
            }
        }
        return Ok(None);
    }
    if t.instances == 0 || t.instances > MAX_INSTANCES {
        return Err(SpecError::invalid(
            "instances",
            format!(
                "profile `{}` needs the number of instances, 1 to {MAX_INSTANCES} (`--instances 3`)",
                profile.name
            ),
        ));
    }
    let master = command_line("constants[DOCKER_CMD_MASTER]", get("DOCKER_CMD_MASTER"))?;
    if !master.is_empty() {
        if !command.is_empty() {
            return Err(SpecError::invalid(
                "constants[DOCKER_CMD_MASTER]",
                "also given as DOCKER_CMD; give the master's command once",
            ));
        }
        *command = master;
    }
    if let Some(span) = &t.span {
        check_span(span, t.instances)?;
    }
    Ok(Some(Cluster {
        instances: t.instances,
        worker_command: command_line("constants[DOCKER_CMD_WORKER]", get("DOCKER_CMD_WORKER"))?,
        outside: profile.network != Network::None,
        span: t.span.clone(),
    }))
}

/// A span (set by the manager) must cover the cluster exactly: the owner holds the master
/// and its peers the rest, in order; a peer's part names its owner and network.
fn check_span(span: &Span, instances: u32) -> Result<(), SpecError> {
    let bad = |why: String| Err(SpecError::invalid("span", why));
    if span.count == 0 || span.first.saturating_add(span.count) > instances {
        return bad(format!(
            "instances {}…{} are not within the cluster's {instances}",
            span.first,
            span.first.saturating_add(span.count).saturating_sub(1)
        ));
    }
    if span.is_part() {
        if span.first == 0 || span.network.is_empty() || !span.peers.is_empty() {
            return bad("a peer's part holds workers only, on its owner's network".into());
        }
        return Ok(());
    }
    if span.first != 0 {
        return bad("the owner holds the master (instance 0)".into());
    }
    let mut next = span.count;
    for p in &span.peers {
        if p.first != next || p.count == 0 || p.agent_id.is_empty() || p.address.is_empty() {
            return bad(format!(
                "peer `{}`: its part must start at instance {next} and name the agent and its address",
                p.agent_id
            ));
        }
        next = next.saturating_add(p.count);
    }
    if next != instances || span.peers.is_empty() {
        return bad(format!(
            "the owner and its peers hold {next} of the cluster's {instances} instances"
        ));
    }
    Ok(())
}

/// `DOCKER_SRV/DOCKER_REPO:DOCKER_TAG`, checked as an image reference naming the constants.
fn image(srv: &str, repo: &str, tag: &str) -> Result<String, SpecError> {
    let srv = srv
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/');
    let repo = if repo.is_empty() {
        "library/ubuntu"
    } else {
        repo
    };
    let tag = if tag.is_empty() { "latest" } else { tag };
    let image = if srv.is_empty() {
        format!("{repo}:{tag}")
    } else {
        format!("{srv}/{repo}:{tag}")
    };
    crate::spec::image_reference(&image).map_err(|e| {
        SpecError::invalid(
            "constants[DOCKER_SRV/DOCKER_REPO/DOCKER_TAG]",
            format!(
                "make `{image}`, which is not an image reference: {}",
                e.reason
            ),
        )
    })?;
    Ok(image)
}

/// A field the template and a constant can both set: one of them.
fn once(field: &str, given: &str, constant: &str, value: &str) -> Result<String, SpecError> {
    match (given.is_empty(), value.is_empty()) {
        (false, false) => Err(SpecError::invalid(
            field,
            format!("also given as the constant {constant}; give it once"),
        )),
        (true, _) => Ok(value.to_string()),
        (false, true) => Ok(given.to_string()),
    }
}
