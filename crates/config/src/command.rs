//! Commands: single changes to the running configuration.
//!
//! The config file (on load and reload) and the admin API both produce
//! Commands, and the runtime applies them through one function, so a backend
//! added by API and one added by file behave identically.

use fulcrum_balance::AdminState;

use crate::model::{BackendConfig, Config, MAX_WEIGHT};

/// One change to the running configuration.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    /// Replace everything with a freshly loaded, valid configuration.
    Replace(Box<Config>),
    /// Add a backend to a cluster.
    AddBackend {
        /// Cluster name.
        cluster: String,
        /// The new backend.
        backend: BackendConfig,
    },
    /// Change a backend's weight and/or admin state.
    UpdateBackend {
        /// Cluster name.
        cluster: String,
        /// Backend address (its identity).
        address: String,
        /// New weight, if changing.
        weight: Option<u32>,
        /// New admin state, if changing.
        state: Option<AdminState>,
    },
    /// Remove a backend.
    RemoveBackend {
        /// Cluster name.
        cluster: String,
        /// Backend address.
        address: String,
    },
}

/// Why a command was refused; the model is unchanged.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// No such cluster.
    #[error("no cluster named `{cluster}`")]
    NoCluster {
        /// The name given.
        cluster: String,
    },
    /// No such backend.
    #[error("cluster `{cluster}` has no backend `{address}`")]
    NoBackend {
        /// Cluster name.
        cluster: String,
        /// Address given.
        address: String,
    },
    /// The backend already exists.
    #[error("cluster `{cluster}` already has backend `{address}`")]
    DuplicateBackend {
        /// Cluster name.
        cluster: String,
        /// Address given.
        address: String,
    },
    /// A field has a bad value.
    #[error("`{field}`: {message}")]
    Invalid {
        /// Field name as in the configuration (`weight`, `address`, `state`).
        field: &'static str,
        /// What is wrong.
        message: String,
    },
}

impl Config {
    /// Applies one command to the model, or refuses it leaving the model unchanged.
    pub fn apply(&mut self, command: Command) -> Result<(), CommandError> {
        match command {
            Command::Replace(config) => {
                *self = *config;
                Ok(())
            }
            Command::AddBackend { cluster, backend } => {
                check_weight(backend.weight)?;
                if !crate::validate::valid_host_port(&backend.address) {
                    return Err(CommandError::Invalid {
                        field: "address",
                        message: format!(
                            "`{}` is not host:port, e.g. \"127.0.0.1:9001\"",
                            backend.address
                        ),
                    });
                }
                let c = self
                    .clusters
                    .get_mut(&cluster)
                    .ok_or(CommandError::NoCluster {
                        cluster: cluster.clone(),
                    })?;
                if c.backends.iter().any(|b| b.address == backend.address) {
                    return Err(CommandError::DuplicateBackend {
                        cluster,
                        address: backend.address,
                    });
                }
                c.backends.push(backend);
                Ok(())
            }
            Command::UpdateBackend {
                cluster,
                address,
                weight,
                state,
            } => {
                if let Some(w) = weight {
                    check_weight(w)?;
                }
                let c = self
                    .clusters
                    .get_mut(&cluster)
                    .ok_or(CommandError::NoCluster {
                        cluster: cluster.clone(),
                    })?;
                let b = c
                    .backends
                    .iter_mut()
                    .find(|b| b.address == address)
                    .ok_or(CommandError::NoBackend { cluster, address })?;
                if let Some(w) = weight {
                    b.weight = w;
                }
                if let Some(s) = state {
                    b.state = s;
                }
                Ok(())
            }
            Command::RemoveBackend { cluster, address } => {
                let c = self
                    .clusters
                    .get_mut(&cluster)
                    .ok_or(CommandError::NoCluster {
                        cluster: cluster.clone(),
                    })?;
                let before = c.backends.len();
                c.backends.retain(|b| b.address != address);
                if c.backends.len() == before {
                    return Err(CommandError::NoBackend { cluster, address });
                }
                Ok(())
            }
        }
    }
}

fn check_weight(w: u32) -> Result<(), CommandError> {
    if w > MAX_WEIGHT {
        return Err(CommandError::Invalid {
            field: "weight",
            message: format!("{w} is above the maximum {MAX_WEIGHT}"),
        });
    }
    Ok(())
}
