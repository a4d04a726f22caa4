//! # fulcrum-config — configuration file, validation and Commands
//!
//! ```text
//! fulcrum.toml --parse--> FileConfig --validate--> Config --Command::Replace--> runtime
//! admin API  ------------------------------------> Command::{Add,Update,Remove}Backend
//! ```
//!
//! * [`file`]: the TOML shapes as written (`File*`).
//! * [`validate()`]: every problem at once, each naming its key path, with the
//!   file line when it can be found, and what to write instead.
//! * [`model`]: the validated [`Config`] with defaults filled in.
//! * [`command`]: the [`Command`]s that both the file and the admin API
//!   produce, applied to the model by [`Config::apply`].

pub mod command;
pub mod error;
pub mod file;
pub mod model;
pub mod validate;

pub use command::{Command, CommandError};
pub use error::{ConfigError, Problem};
pub use file::FileConfig;
pub use model::*;
pub use validate::validate;

/// Parses and validates configuration text. `file` names the source in errors.
pub fn parse(text: &str, file: Option<&str>) -> Result<Config, ConfigError> {
    let file_name = file.map(str::to_owned);
    let mut unknown = Vec::new();
    let de = toml::Deserializer::new(text);
    let parsed: Result<FileConfig, _> =
        serde_ignored::deserialize(de, |path| unknown.push(render_path(&path)));
    let mut problems = match parsed {
        Ok(file_config) => {
            let mut problems: Vec<Problem> = unknown.iter().map(|k| unknown_key(k)).collect();
            match validate(&file_config) {
                Ok(config) if problems.is_empty() => return Ok(config),
                Ok(_) => {}
                Err(mut more) => problems.append(&mut more),
            }
            problems
        }
        Err(e) => {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            vec![Problem {
                key: String::new(),
                line,
                message: e.message().trim().to_owned(),
            }]
        }
    };
    let locator = error::Locator::new(text);
    for p in &mut problems {
        if p.line.is_none() && !p.key.is_empty() {
            p.line = locator.line(&p.key);
        }
    }
    problems.sort_by_key(|p| p.line.unwrap_or(usize::MAX));
    Err(ConfigError {
        file: file_name,
        problems,
    })
}

/// Reads, parses and validates a configuration file.
pub fn load(path: &std::path::Path) -> Result<Config, ConfigError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError::single(
            Some(name.clone()),
            Problem::new("", format!("cannot read the file: {e}")),
        )
    })?;
    let config = parse(&text, Some(&name))?;
    let mut problems = check_files(&config);
    if problems.is_empty() {
        return Ok(config);
    }
    let locator = error::Locator::new(&text);
    for p in &mut problems {
        p.line = locator.line(&p.key);
    }
    Err(ConfigError {
        file: Some(name),
        problems,
    })
}

/// The MaxMind DB metadata marker; a `.mmdb` file ends with it followed by
/// at most 128 KiB of metadata.
const MMDB_METADATA_MARKER: &[u8] = b"\xAB\xCD\xEFMaxMind.com";

/// Files the configuration names that must exist when it is loaded (and not
/// only when it is parsed from text): each listener's `geoip_db` must be
/// readable and look like a MaxMind-format database. The runtime opens it;
/// this check makes a wrong path a load (and reload) error naming the key.
pub fn check_files(config: &Config) -> Vec<Problem> {
    let mut problems = Vec::new();
    for (i, l) in config.listeners.iter().enumerate() {
        let Some(path) = &l.geoip_db else { continue };
        if let Err(why) = check_mmdb(std::path::Path::new(path)) {
            problems.push(Problem::new(
                format!("listener[{i}].geoip_db"),
                format!("cannot use \"{path}\": {why}"),
            ));
        }
    }
    problems
}

/// Opens `path` and looks for the metadata marker in its last 128 KiB.
fn check_mmdb(path: &std::path::Path) -> Result<(), String> {
    use std::io::{Read, Seek, SeekFrom};
    const METADATA_MAX: u64 = 128 * 1024;
    let mut f = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let len = f.metadata().map_err(|e| e.to_string())?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(METADATA_MAX)))
        .map_err(|e| e.to_string())?;
    let mut tail = Vec::new();
    f.read_to_end(&mut tail).map_err(|e| e.to_string())?;
    if tail
        .windows(MMDB_METADATA_MARKER.len())
        .any(|w| w == MMDB_METADATA_MARKER)
    {
        Ok(())
    } else {
        Err("not a MaxMind-format database (no metadata marker)".into())
    }
}

/// `cluster.app.algoritm`, `listener[0].route[1].clustr`.
fn render_path(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", render_path(parent)),
        Path::Map { parent, key } => {
            let p = render_path(parent);
            if p.is_empty() {
                key.clone()
            } else {
                format!("{p}.{key}")
            }
        }
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => render_path(parent),
    }
}

/// The problem for an unknown key, with the keys valid at that place.
fn unknown_key(path: &str) -> Problem {
    let (parent, name) = path.rsplit_once('.').unwrap_or(("", path));
    let known = known_keys(parent);
    let message = match error::suggest(name, known) {
        Some(s) => format!("unknown key `{name}`; did you mean `{s}`?"),
        None => format!(
            "unknown key `{name}`; expected one of: {}",
            known.join(", ")
        ),
    };
    Problem::new(path, message)
}

/// The keys allowed in the table at `parent` (a rendered path).
fn known_keys(parent: &str) -> &'static [&'static str] {
    use file::*;
    let shape: Vec<&str> = parent
        .split('.')
        .map(|s| s.split('[').next().unwrap_or(s))
        .collect();
    match shape.as_slice() {
        [""] => FileConfig::KEYS,
        ["admin"] => FileAdmin::KEYS,
        ["runtime"] => FileRuntime::KEYS,
        ["listener"] => FileListener::KEYS,
        ["listener", "route"] => FileRoute::KEYS,
        ["listener", "tls"] => FileTls::KEYS,
        ["listener", "tls", "certificates"] => FileCertificate::KEYS,
        ["listener", "route", "headers" | "query", _] => FileValueMatch::KEYS,
        ["listener", "route", "clusters"] => FileWeightedCluster::KEYS,
        ["listener", "route", "request_headers" | "response_headers"] => FileHeaderRewrite::KEYS,
        ["listener", "route", "redirect"] => FileRedirect::KEYS,
        ["listener", "route", "rate_limit"] => FileRateLimit::KEYS,
        ["cluster", _, "sticky"] => FileSticky::KEYS,
        ["cluster", _] => FileCluster::KEYS,
        ["cluster", _, "backends"] => FileBackend::KEYS,
        ["cluster", _, "health"] => FileHealth::KEYS,
        ["cluster", _, "outlier"] => FileOutlier::KEYS,
        ["cluster", _, "admission"] => FileAdmission::KEYS,
        ["cluster", _, "tls"] => FileUpstreamTls::KEYS,
        _ => &[],
    }
}

#[cfg(test)]
mod tests;
