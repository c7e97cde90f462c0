//! How chatd reaches ScyllaDB: the `[scylla]` section of `chatd.toml`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ScyllaConfig {
    /// Contact points, `host:port`; the driver discovers the rest.
    pub nodes: Vec<String>,
    pub keyspace: String,
    /// Used only when the migration creates the keyspace.
    pub replication: Replication,
    pub username: Option<String>,
    pub password: Option<String>,
    /// PEM file of the CA that signed the nodes' certificates; TLS is on
    /// when set.
    pub tls_ca_file: Option<PathBuf>,
    /// `LOCAL_QUORUM` (default), `QUORUM`, `LOCAL_ONE`, `ONE`, `ALL`, …
    pub consistency: String,
    /// For the conditional writes (`LOCAL_SERIAL` or `SERIAL`).
    pub serial_consistency: String,
    /// Datacenter whose nodes are preferred as coordinators.
    pub local_datacenter: Option<String>,
    pub request_timeout_ms: u64,
    /// Apply pending migrations when chatd starts (`chatd migrate` does it
    /// on demand).
    pub migrate_on_start: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Replication {
    /// `SimpleStrategy` (one datacenter, tests) or
    /// `NetworkTopologyStrategy` (production).
    pub class: String,
    /// For `SimpleStrategy`.
    pub replication_factor: u32,
    /// For `NetworkTopologyStrategy`: datacenter name → replicas.
    pub datacenters: BTreeMap<String, u32>,
}

impl Default for ScyllaConfig {
    fn default() -> Self {
        ScyllaConfig {
            nodes: vec!["127.0.0.1:9042".into()],
            keyspace: "chat".into(),
            replication: Replication::default(),
            username: None,
            password: None,
            tls_ca_file: None,
            consistency: "LOCAL_QUORUM".into(),
            serial_consistency: "LOCAL_SERIAL".into(),
            local_datacenter: None,
            request_timeout_ms: 5_000,
            migrate_on_start: true,
        }
    }
}

impl Default for Replication {
    fn default() -> Self {
        Replication {
            class: "SimpleStrategy".into(),
            replication_factor: 1,
            datacenters: BTreeMap::new(),
        }
    }
}

impl Replication {
    /// The CQL map literal for `CREATE KEYSPACE … WITH replication = …`.
    pub fn to_cql(&self) -> Result<String, String> {
        match self.class.as_str() {
            "SimpleStrategy" => Ok(format!(
                "{{'class': 'SimpleStrategy', 'replication_factor': {}}}",
                self.replication_factor.max(1)
            )),
            "NetworkTopologyStrategy" => {
                if self.datacenters.is_empty() {
                    return Err(
                        "NetworkTopologyStrategy needs [scylla.replication.datacenters]".into(),
                    );
                }
                let mut parts = vec!["'class': 'NetworkTopologyStrategy'".to_owned()];
                for (dc, replicas) in &self.datacenters {
                    if !dc
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                    {
                        return Err(format!("invalid datacenter name {dc:?}"));
                    }
                    parts.push(format!("'{dc}': {replicas}"));
                }
                Ok(format!("{{{}}}", parts.join(", ")))
            }
            other => Err(format!("unknown replication class {other:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replication_literals() {
        assert_eq!(
            Replication::default().to_cql().unwrap(),
            "{'class': 'SimpleStrategy', 'replication_factor': 1}"
        );
        let nts = Replication {
            class: "NetworkTopologyStrategy".into(),
            replication_factor: 0,
            datacenters: [("dc1".to_owned(), 3), ("dc2".to_owned(), 2)].into(),
        };
        assert_eq!(
            nts.to_cql().unwrap(),
            "{'class': 'NetworkTopologyStrategy', 'dc1': 3, 'dc2': 2}"
        );
        let bad = Replication {
            datacenters: [("x'; DROP".to_owned(), 1)].into(),
            ..nts
        };
        assert!(bad.to_cql().is_err());
    }
}
