//! Exposed ports: DRMAA2's `exposedPorts` extension, Docker's
//! `-p [HOSTIP:][HOSTPORT:]CONTAINERPORT[/PROTO]`. A container port with its protocol, and
//! optionally the host port (inside `container/port_range`) and the host address to bind
//! (one of this host's own). Whether the host port is free is decided when slots are
//! allocated, not here.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::{PortRequest, SpecError};
use crate::config::cluster::KernelSettings;

/// Most ports one kernel may expose.
pub const MAX_PORTS: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Port {
    pub container: u16,
    pub protocol: String,
    /// The host port asked for; 0 lets the agent choose one from `container/port_range`.
    #[serde(default)]
    pub host: u16,
    /// The host address to bind; empty binds every address.
    #[serde(default)]
    pub host_ip: String,
}

/// Validates the spec's ports: each names its field (`ports[1].host_port`) when refused.
pub fn validate(ports: &[PortRequest], cfg: &KernelSettings) -> Result<Vec<Port>, SpecError> {
    if ports.len() > MAX_PORTS {
        return Err(SpecError::invalid(
            "ports",
            format!("at most {MAX_PORTS} exposed ports"),
        ));
    }
    let mut out: Vec<Port> = Vec::new();
    for (i, p) in ports.iter().enumerate() {
        let field = format!("ports[{i}]");
        if p.container_port == 0 || p.container_port > 65535 {
            return Err(SpecError::invalid(
                format!("{field}.container_port"),
                format!("{} is not a port (1-65535)", p.container_port),
            ));
        }
        let protocol = match p.protocol.as_str() {
            "" | "tcp" => "tcp",
            "udp" => "udp",
            other => {
                return Err(SpecError::invalid(
                    format!("{field}.protocol"),
                    format!("`{other}`: expected tcp or udp"),
                ))
            }
        };
        let (lo, hi) = cfg.port_range;
        if p.host_port != 0 && !(u32::from(lo)..=u32::from(hi)).contains(&p.host_port) {
            return Err(SpecError::invalid(
                format!("{field}.host_port"),
                format!(
                    "{} is outside config/container/port_range {lo}-{hi}",
                    p.host_port
                ),
            ));
        }
        let host_ip = host_ip(&format!("{field}.host_ip"), &p.host_ip)?;
        let port = Port {
            container: p.container_port as u16,
            protocol: protocol.into(),
            host: p.host_port as u16,
            host_ip,
        };
        if out
            .iter()
            .any(|q| q.container == port.container && q.protocol == port.protocol)
        {
            return Err(SpecError::invalid(
                format!("{field}.container_port"),
                format!("{}/{protocol} is exposed twice", p.container_port),
            ));
        }
        if port.host != 0
            && out
                .iter()
                .any(|q| q.host == port.host && q.protocol == port.protocol)
        {
            return Err(SpecError::invalid(
                format!("{field}.host_port"),
                format!("{}/{protocol} is asked for twice", port.host),
            ));
        }
        out.push(port);
    }
    Ok(out)
}

/// An address of this host (or the unspecified one), normalised; empty stays empty.
fn host_ip(field: &str, v: &str) -> Result<String, SpecError> {
    let v = v.trim().trim_start_matches('[').trim_end_matches(']');
    if v.is_empty() {
        return Ok(String::new());
    }
    let ip: IpAddr = v
        .parse()
        .map_err(|_| SpecError::invalid(field, format!("`{v}` is not an IP address")))?;
    if ip.is_unspecified() {
        return Ok(ip.to_string());
    }
    let own = host_addresses();
    if !own.contains(&ip) {
        let shown: Vec<String> = own.iter().map(IpAddr::to_string).collect();
        return Err(SpecError::invalid(
            field,
            format!(
                "{ip} is not an address of this host (it has {})",
                shown.join(", ")
            ),
        ));
    }
    Ok(ip.to_string())
}

/// The addresses of this host's interfaces.
pub fn host_addresses() -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = nix::ifaddrs::getifaddrs()
        .into_iter()
        .flatten()
        .filter_map(|a| {
            let a = a.address?;
            if let Some(v4) = a.as_sockaddr_in() {
                Some(IpAddr::V4(v4.ip()))
            } else {
                a.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
            }
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(container: u32, host: u32, ip: &str) -> PortRequest {
        PortRequest {
            container_port: container,
            protocol: String::new(),
            host_port: host,
            host_ip: ip.into(),
        }
    }

    fn field_of(ports: &[PortRequest]) -> String {
        validate(ports, &KernelSettings::default())
            .unwrap_err()
            .field
    }

    #[test]
    fn an_explicit_host_port_and_address_are_kept() {
        let p = validate(&[port(80, 30005, "127.0.0.1")], &KernelSettings::default()).unwrap();
        assert_eq!(p[0].host, 30005);
        assert_eq!(p[0].host_ip, "127.0.0.1");
        assert_eq!(p[0].protocol, "tcp");
    }

    #[test]
    fn host_ports_outside_the_range_and_foreign_addresses_are_refused_by_field() {
        assert_eq!(field_of(&[port(80, 80, "")]), "ports[0].host_port");
        assert_eq!(
            field_of(&[port(80, 0, ""), port(81, 0, "192.0.2.77")]),
            "ports[1].host_ip"
        );
        assert_eq!(field_of(&[port(80, 0, "local")]), "ports[0].host_ip");
        assert_eq!(
            field_of(&[port(80, 30001, ""), port(81, 30001, "")]),
            "ports[1].host_port"
        );
        assert_eq!(field_of(&[port(0, 0, "")]), "ports[0].container_port");
    }
}
