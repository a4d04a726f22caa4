//! Reloading the configuration file, and what a reload changed.
//!
//! Semantics (documented in `docs/operations.md`): **a reload replaces the
//! running model with the file.** Runtime changes made through the API since
//! the last load are not merged into it; the reload's answer lists every
//! backend the reload added, removed or changed relative to the running
//! model, and marks as `overridden` those that undo an API change. An
//! operator who wants an API change to last writes it into the file.
//!
//! Why not merge: after a merge the file no longer describes the running
//! proxy, and a later reload could not remove a backend that was added by
//! API. "The file is the truth, the API is a temporary override, and the
//! reload tells you what it overrode" is predictable and auditable.
//!
//! Learned per-backend state (load, health, slow start) is keyed by
//! backend identity, so it survives the reload either way.

use std::collections::BTreeMap;
use std::path::Path;

use fulcrum_balance::AdminState;
use fulcrum_config::{Command, Config};
use serde::Serialize;

use crate::state::Runtime;

/// How a backend differs between two models.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BackendChange {
    /// Cluster name.
    pub cluster: String,
    /// Backend address.
    pub address: String,
    /// `added`, `removed` or `changed`.
    pub change: &'static str,
    /// `[before, after]` weight when it changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub weight: Option<[u32; 2]>,
    /// `[before, after]` admin state when it changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<[&'static str; 2]>,
}

/// What a successful reload did.
#[derive(Clone, Debug, Serialize)]
pub struct ReloadReport {
    /// The file that was read.
    pub file: String,
    /// Generation of the new configuration.
    pub generation: u64,
    /// Every backend the reload added, removed or changed.
    pub changes: Vec<BackendChange>,
    /// The subset of `changes` that undoes a change made through the API.
    pub overridden: Vec<BackendChange>,
    /// Listeners added by the reload.
    pub listeners_added: Vec<String>,
    /// Listeners removed by the reload (their connections finish gracefully).
    pub listeners_removed: Vec<String>,
    /// Clusters added by the reload.
    pub clusters_added: Vec<String>,
    /// Clusters removed by the reload.
    pub clusters_removed: Vec<String>,
}

/// Why a reload was refused; the running configuration is untouched.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{message}")]
pub struct ReloadError {
    /// The full error text (every problem, with file, line and key).
    pub message: String,
}

/// Reads, validates and applies `path`. Counts the result in the metrics
/// and logs it; a bad file changes nothing.
pub fn reload_file(runtime: &Runtime, path: &Path) -> Result<ReloadReport, ReloadError> {
    let result = fulcrum_config::load(path)
        .map_err(|e| e.to_string())
        .and_then(|config| {
            let running = runtime.config();
            let baseline = runtime.baseline();
            let generation = runtime
                .apply([Command::Replace(Box::new(config.clone()))])
                .map_err(|e| e.to_string())?;
            Ok(report(path, generation, &baseline, &running, &config))
        });
    runtime.metrics().reloaded(result.is_ok());
    match result {
        Ok(report) => {
            tracing::info!(
                file = %path.display(),
                generation = report.generation,
                changes = report.changes.len(),
                overridden = report.overridden.len(),
                "configuration reloaded"
            );
            for o in &report.overridden {
                tracing::warn!(cluster = %o.cluster, backend = %o.address, change = o.change, "reload overrides a change made through the admin API");
            }
            Ok(report)
        }
        Err(message) => {
            tracing::error!(file = %path.display(), "reload refused, keeping the running configuration:\n{message}");
            Err(ReloadError { message })
        }
    }
}

fn report(
    path: &Path,
    generation: u64,
    baseline: &Config,
    running: &Config,
    new: &Config,
) -> ReloadReport {
    let changes = backend_changes(running, new);
    // A set, not a scan per change: both lists can hold every backend.
    let by_api: std::collections::HashSet<(String, String)> = backend_changes(baseline, running)
        .into_iter()
        .map(|a| (a.cluster, a.address))
        .collect();
    let overridden = changes
        .iter()
        .filter(|c| by_api.contains(&(c.cluster.clone(), c.address.clone())))
        .cloned()
        .collect();
    let names =
        |c: &Config| -> Vec<String> { c.listeners.iter().map(|l| l.name.clone()).collect() };
    let (old_l, new_l) = (names(running), names(new));
    ReloadReport {
        file: path.display().to_string(),
        generation,
        changes,
        overridden,
        listeners_added: new_l
            .iter()
            .filter(|n| !old_l.contains(n))
            .cloned()
            .collect(),
        listeners_removed: old_l
            .iter()
            .filter(|n| !new_l.contains(n))
            .cloned()
            .collect(),
        clusters_added: new
            .clusters
            .keys()
            .filter(|k| !running.clusters.contains_key(*k))
            .cloned()
            .collect(),
        clusters_removed: running
            .clusters
            .keys()
            .filter(|k| !new.clusters.contains_key(*k))
            .cloned()
            .collect(),
    }
}

type BackendIndex<'a> = BTreeMap<(&'a str, &'a str), (u32, AdminState)>;

/// Every backend of `config` by (cluster, address), borrowing the names.
fn index(config: &Config) -> BackendIndex<'_> {
    let mut m = BTreeMap::new();
    for (cluster, cc) in &config.clusters {
        for b in &cc.backends {
            m.insert((cluster.as_str(), b.address.as_str()), (b.weight, b.state));
        }
    }
    m
}

/// Backends added, removed or changed from `before` to `after`, ordered
/// by cluster and address (removed and changed first, then added).
///
/// The indexes borrow the names from the models: a reload of 10 000
/// backends diffs twice (against the running model and the baseline), and
/// copying every key into them was most of the diff's cost.
pub fn backend_changes(before: &Config, after: &Config) -> Vec<BackendChange> {
    let (old, new) = (index(before), index(after));
    let change = |(cluster, address): (&str, &str), change, weight, state| BackendChange {
        cluster: cluster.to_owned(),
        address: address.to_owned(),
        change,
        weight,
        state,
    };
    let mut out = Vec::new();
    for (&key, &(w, s)) in &old {
        match new.get(&key) {
            None => out.push(change(key, "removed", None, None)),
            Some(&(w2, s2)) if (w, s) != (w2, s2) => out.push(change(
                key,
                "changed",
                (w != w2).then_some([w, w2]),
                (s != s2).then_some([s.as_str(), s2.as_str()]),
            )),
            Some(_) => {}
        }
    }
    for &key in new.keys() {
        if !old.contains_key(&key) {
            out.push(change(key, "added", None, None));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(backends: &str) -> Config {
        crate::test_support::app_config(&format!("backends = [{backends}]"))
    }

    #[test]
    fn backend_changes_lists_removed_and_changed_then_added_by_address() {
        let before = config(
            "{ address = \"10.0.0.3:80\" }, { address = \"10.0.0.1:80\" }, \
             { address = \"10.0.0.2:80\", weight = 2 }",
        );
        let after = config(
            "{ address = \"10.0.0.5:80\" }, { address = \"10.0.0.2:80\", weight = 3, state = \"draining\" }, \
             { address = \"10.0.0.4:80\" }, { address = \"10.0.0.3:80\" }",
        );
        let changes = backend_changes(&before, &after);
        let seen: Vec<(&str, &str)> = changes
            .iter()
            .map(|c| (c.address.as_str(), c.change))
            .collect();
        assert_eq!(
            seen,
            [
                ("10.0.0.1:80", "removed"),
                ("10.0.0.2:80", "changed"),
                ("10.0.0.4:80", "added"),
                ("10.0.0.5:80", "added"),
            ]
        );
        assert_eq!(changes[1].weight, Some([2, 3]));
        assert_eq!(changes[1].state, Some(["enabled", "draining"]));
        assert!(changes.iter().all(|c| c.cluster == "app"));
        assert!(backend_changes(&after, &after).is_empty());
    }
}
