//! Helpers shared by the unit tests of this crate.

use fulcrum_config::Config;

/// A configuration with one HTTP listener `web` on a free port sending
/// everything to cluster `app`, whose table holds `cluster` (its
/// `backends = [...]` line and any further keys or sub-tables).
pub(crate) fn app_config(cluster: &str) -> Config {
    let text = format!(
        "[[listener]]\nname = \"web\"\nbind = \"127.0.0.1:0\"\ncluster = \"app\"\n\
         [cluster.app]\n{cluster}\n"
    );
    fulcrum_config::parse(&text, None).unwrap()
}
