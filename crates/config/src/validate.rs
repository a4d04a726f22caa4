//! File shapes → validated model, collecting every problem with its key path.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::time::Duration;

use fulcrum_balance::selector::{GeoPoint, Location};
use fulcrum_balance::{AdminState, Algorithm};

use crate::error::{suggest, Problem};
use crate::file::*;
use crate::model::*;

mod routing;

/// Validates a parsed file. Returns the model, or every problem found.
pub fn validate(file: &FileConfig) -> Result<Config, Vec<Problem>> {
    let mut v = Validator::default();
    let config = v.config(file);
    if v.problems.is_empty() {
        Ok(config)
    } else {
        Err(v.problems)
    }
}

#[derive(Default)]
struct Validator {
    problems: Vec<Problem>,
}

impl Validator {
    fn problem(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem::new(key, message));
    }

    fn config(&mut self, file: &FileConfig) -> Config {
        let admin = self.admin(file.admin.as_ref());
        let runtime = RuntimeConfig {
            worker_threads: file.runtime.as_ref().and_then(|r| r.worker_threads),
        };
        if runtime.worker_threads == Some(0) {
            self.problem(
                "runtime.worker_threads",
                "must be at least 1, or left out for one per core",
            );
        }
        let clusters: BTreeMap<String, ClusterConfig> = file
            .cluster
            .iter()
            .map(|(name, c)| (name.clone(), self.cluster(name, c)))
            .collect();
        let mut names = HashSet::new();
        let mut binds = HashSet::new();
        let listeners: Vec<ListenerConfig> = file
            .listener
            .iter()
            .enumerate()
            .map(|(i, l)| self.listener(i, l, &clusters))
            .collect();
        for (i, l) in listeners.iter().enumerate() {
            if !names.insert(l.name.clone()) {
                self.problem(
                    format!("listener[{i}].name"),
                    format!("duplicate listener name `{}`", l.name),
                );
            }
            if l.bind.port() != 0 && !binds.insert((l.bind, l.protocol)) {
                self.problem(
                    format!("listener[{i}].bind"),
                    format!("`{}` is bound by another listener", l.bind),
                );
            }
        }
        for (i, l) in listeners.iter().enumerate() {
            if l.protocol == Protocol::Http {
                continue;
            }
            let used = l
                .cluster
                .iter()
                .chain(l.sni_routes.iter().map(|r| &r.cluster));
            for name in used {
                if clusters.get(name).is_some_and(|c| c.tls.is_some()) {
                    self.problem(
                        format!("cluster.{name}.tls"),
                        format!("TLS to backends is for http listeners; listener[{i}] (`{}`) forwards {} to this cluster in plain text; remove `tls` or use a separate cluster", l.name, l.protocol.as_str()),
                    );
                }
            }
        }
        if listeners.is_empty() {
            self.problem(
                "listener",
                "no listener; add one: [[listener]] name = \"web\" bind = \"127.0.0.1:8080\" cluster = \"app\"",
            );
        }
        Config {
            admin,
            runtime,
            listeners,
            clusters,
        }
    }

    fn admin(&mut self, file: Option<&FileAdmin>) -> AdminConfig {
        let mut admin = AdminConfig::default();
        let Some(file) = file else { return admin };
        if let Some(bind) = &file.bind {
            if let Some(addr) = self.socket_addr("admin.bind", bind) {
                admin.bind = addr;
            }
        }
        admin.token_file = file.token_file.clone();
        if !admin.bind.ip().is_loopback() && admin.token_file.is_none() {
            self.problem(
                "admin.token_file",
                format!(
                    "the admin API binds to non-loopback {} and so needs a token; set token_file = \"/etc/fulcrum/admin.token\" (or FULCRUM_ADMIN_TOKEN), or bind to 127.0.0.1",
                    admin.bind
                ),
            );
        }
        admin
    }

    fn listener(
        &mut self,
        i: usize,
        file: &FileListener,
        clusters: &BTreeMap<String, ClusterConfig>,
    ) -> ListenerConfig {
        let key = |k: &str| format!("listener[{i}].{k}");
        let name = match &file.name {
            Some(n) if !n.is_empty() => n.clone(),
            _ => {
                self.problem(
                    key("name"),
                    "missing; every listener needs a unique name such as \"web\"",
                );
                format!("listener{i}")
            }
        };
        let bind = match &file.bind {
            Some(b) => self.socket_addr(&key("bind"), b),
            None => {
                self.problem(
                    key("bind"),
                    "missing; write the address to listen on, e.g. bind = \"127.0.0.1:8080\"",
                );
                None
            }
        }
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
        let protocol = match file.protocol.as_deref() {
            None | Some("http") => Protocol::Http,
            Some("tcp") => Protocol::Tcp,
            Some("udp") => Protocol::Udp,
            Some(other) => {
                self.problem(
                    key("protocol"),
                    format!("unknown protocol `{other}`, expected one of: http, tcp, udp"),
                );
                Protocol::Http
            }
        };
        if let Some(c) = &file.cluster {
            self.cluster_ref(&key("cluster"), c, clusters);
        }
        let mut routes = Vec::new();
        let mut sni_routes = Vec::new();
        for (j, r) in file.route.iter().enumerate() {
            let rkey = format!("listener[{i}].route[{j}]");
            match protocol {
                Protocol::Http => {
                    if r.sni.is_some() {
                        self.problem(
                            format!("{rkey}.sni"),
                            "sni routes belong to tcp listeners; http listeners route by `host`",
                        );
                    }
                    routes.push(self.route(&rkey, r, clusters));
                }
                _ => sni_routes.extend(self.sni_route(&rkey, protocol, r, clusters)),
            }
        }
        if protocol != Protocol::Http && file.cluster.is_none() && sni_routes.is_empty() {
            self.problem(
                key("cluster"),
                format!(
                    "missing; a {} listener needs a cluster to send connections to, e.g. cluster = \"app\"",
                    protocol.as_str()
                ),
            );
        }
        let tls = file.tls.as_ref().map(|t| self.tls(&key("tls"), t));
        if tls.is_some() && protocol == Protocol::Udp {
            self.problem(
                key("tls"),
                "udp listeners cannot terminate TLS; remove `tls` or use protocol = \"tcp\"",
            );
        }
        let accept_proxy_protocol = file.accept_proxy_protocol.unwrap_or(false);
        if accept_proxy_protocol && protocol != Protocol::Tcp {
            self.problem(
                key("accept_proxy_protocol"),
                "only tcp listeners accept PROXY protocol headers",
            );
        }
        let mut proxy_protocol_from = Vec::new();
        for (j, s) in file.proxy_protocol_from.iter().flatten().enumerate() {
            match IpNet::parse(s) {
                Some(net) => proxy_protocol_from.push(net),
                None => self.problem(
                    format!("listener[{i}].proxy_protocol_from[{j}]"),
                    format!("`{s}` is not an address or CIDR such as \"10.0.0.0/8\""),
                ),
            }
        }
        if accept_proxy_protocol && file.proxy_protocol_from.is_none() {
            self.problem(
                key("proxy_protocol_from"),
                "missing; list the load balancers trusted to send PROXY headers, e.g. proxy_protocol_from = [\"10.0.0.0/8\"]",
            );
        }
        if file.defer_accept.is_some() && protocol == Protocol::Udp {
            self.problem(
                key("defer_accept"),
                "udp listeners accept no connections; remove `defer_accept`",
            );
        }
        // HTTP and TLS clients speak first. A tcp listener may carry a
        // protocol whose server speaks first (SMTP, MySQL), so it defers
        // only when it must read the client's first bytes anyway: a TLS
        // handshake, SNI routes or a PROXY header.
        let client_speaks_first = protocol == Protocol::Http
            || (protocol == Protocol::Tcp
                && (tls.is_some() || !sni_routes.is_empty() || accept_proxy_protocol));
        let defer_accept = file.defer_accept.unwrap_or(client_speaks_first);
        let mut max_flows = DEFAULT_MAX_FLOWS;
        if let Some(n) = file.max_flows {
            if protocol != Protocol::Udp {
                self.problem(key("max_flows"), "only udp listeners have flows");
            }
            if n == 0 {
                self.problem(key("max_flows"), "must be at least 1");
            }
            max_flows = n;
        }
        let mut limits = HttpLimits::default();
        if let Some(d) = self.duration(&key("header_timeout"), file.header_timeout.as_deref()) {
            limits.header_timeout = d;
        }
        if let Some(d) = self.duration(&key("idle_timeout"), file.idle_timeout.as_deref()) {
            limits.idle_timeout = d;
        }
        if let Some(n) = file.max_header_bytes {
            if n < 1024 {
                self.problem(key("max_header_bytes"), "must be at least 1024 bytes");
            }
            limits.max_header_bytes = n;
        }
        if let Some(n) = file.max_headers {
            if n == 0 {
                self.problem(key("max_headers"), "must be at least 1");
            }
            limits.max_headers = n;
        }
        if let Some(n) = file.max_connections {
            if n == 0 {
                self.problem(key("max_connections"), "must be at least 1");
            }
            limits.max_connections = n;
        }
        if let Some(n) = file.max_uri_bytes {
            if n < 256 {
                self.problem(key("max_uri_bytes"), "must be at least 256 bytes");
            }
            limits.max_uri_bytes = n;
        }
        if let Some(n) = file.max_body_bytes {
            limits.max_body_bytes = n;
        }
        if let Some(n) = file.max_requests_per_connection {
            if n == 0 {
                self.problem(key("max_requests_per_connection"), "must be at least 1");
            }
            limits.max_requests_per_connection = n;
        }
        if let Some(d) = self.duration(&key("body_timeout"), file.body_timeout.as_deref()) {
            limits.body_timeout = d;
        }
        if let Some(n) = file.min_body_rate {
            limits.min_body_rate = n;
        }
        if let Some(n) = file.max_concurrent_streams {
            if n == 0 {
                self.problem(
                    key("max_concurrent_streams"),
                    "must be at least 1 (0 would refuse every HTTP/2 request)",
                );
            }
            limits.max_concurrent_streams = n;
        }
        if protocol != Protocol::Http {
            for (name, set) in [
                ("body_timeout", file.body_timeout.is_some()),
                ("min_body_rate", file.min_body_rate.is_some()),
                (
                    "max_concurrent_streams",
                    file.max_concurrent_streams.is_some(),
                ),
            ] {
                if set {
                    self.problem(
                        key(name),
                        format!("only http listeners read request bodies and HTTP/2 streams; remove `{name}` from this {} listener", protocol.as_str()),
                    );
                }
            }
        }
        if let Some(n) = file.max_connections_per_ip {
            if n == 0 {
                self.problem(key("max_connections_per_ip"), "must be at least 1");
            }
            limits.max_connections_per_ip = n;
        }
        let debug_from = self.networks(&key("debug_from"), file.debug_from.as_deref());
        let priority_from = self.networks(&key("priority_from"), file.priority_from.as_deref());
        let location_from = self.networks(&key("location_from"), file.location_from.as_deref());
        if let Some(db) = &file.geoip_db {
            if db.is_empty() {
                self.problem(
                    key("geoip_db"),
                    "is empty; write the path of a MaxMind-format database, e.g. \"GeoLite2-City.mmdb\"",
                );
            }
        }
        ListenerConfig {
            name,
            bind,
            protocol,
            cluster: file.cluster.clone(),
            routes,
            limits,
            debug_from,
            tls,
            sni_routes,
            accept_proxy_protocol,
            proxy_protocol_from,
            max_flows,
            priority_from,
            location_from,
            geoip_db: file.geoip_db.clone(),
            allow: self.networks(&key("allow"), file.allow.as_deref()),
            deny: self.networks(&key("deny"), file.deny.as_deref()),
            trusted_proxies: self
                .networks(&key("trusted_proxies"), file.trusted_proxies.as_deref()),
            defer_accept,
            access_log: self.access_log(&key(""), protocol, file),
            request_id: {
                if file.request_id.is_some() && protocol != Protocol::Http {
                    self.problem(
                        key("request_id"),
                        "only http listeners have requests; remove it",
                    );
                }
                file.request_id.unwrap_or(false)
            },
        }
    }

    /// A list of CIDRs or addresses (`debug_from`, `priority_from`, ...).
    fn networks(&mut self, key: &str, list: Option<&[String]>) -> Vec<IpNet> {
        let mut out = Vec::new();
        for (j, s) in list.unwrap_or_default().iter().enumerate() {
            match IpNet::parse(s) {
                Some(net) => out.push(net),
                None => self.problem(
                    format!("{key}[{j}]"),
                    format!("`{s}` is not an address or CIDR such as \"127.0.0.0/8\""),
                ),
            }
        }
        out
    }

    fn sni_route(
        &mut self,
        key: &str,
        protocol: Protocol,
        file: &FileRoute,
        clusters: &BTreeMap<String, ClusterConfig>,
    ) -> Option<SniRoute> {
        if protocol == Protocol::Udp {
            self.problem(
                key,
                "udp listeners have no routes; send everything to `cluster`",
            );
            return None;
        }
        for (name, set) in [
            ("host", file.host.is_some()),
            ("path_prefix", file.path_prefix.is_some()),
        ] {
            if set {
                self.problem(
                    format!("{key}.{name}"),
                    "tcp listeners route by TLS server name only; write sni = \"a.example.com\"",
                );
            }
        }
        for (name, set) in [
            ("max_body_bytes", file.max_body_bytes.is_some()),
            ("allow", file.allow.is_some()),
            ("deny", file.deny.is_some()),
        ] {
            if set {
                self.problem(
                    format!("{key}.{name}"),
                    format!("`{name}` applies to http routes; on a tcp listener set `allow`/`deny` on the listener itself"),
                );
            }
        }
        let cluster = match &file.cluster {
            Some(c) => {
                self.cluster_ref(&format!("{key}.cluster"), c, clusters);
                c.clone()
            }
            None => {
                self.problem(
                    format!("{key}.cluster"),
                    "missing; a route must name the cluster it sends to",
                );
                String::new()
            }
        };
        let Some(sni) = &file.sni else {
            self.problem(
                format!("{key}.sni"),
                "missing; a tcp route matches a TLS server name: sni = \"a.example.com\" or \"*.example.com\"",
            );
            return None;
        };
        let sni = self.host_match(&format!("{key}.sni"), sni);
        Some(SniRoute { sni, cluster })
    }

    fn host_match(&mut self, key: &str, h: &str) -> HostMatch {
        let h = h.to_ascii_lowercase();
        match h.strip_prefix('*') {
            Some(suffix) if suffix.starts_with('.') => HostMatch::Suffix(suffix.to_owned()),
            Some(_) => {
                self.problem(key, "a wildcard host must look like \"*.example.com\"");
                HostMatch::Exact(h.clone())
            }
            None => HostMatch::Exact(h),
        }
    }

    fn tls(&mut self, key: &str, file: &FileTls) -> TlsConfig {
        let mut certificates = Vec::new();
        for (j, c) in file.certificates.iter().flatten().enumerate() {
            let ckey = format!("{key}.certificates[{j}]");
            if let Some(c) = self.certificate(&ckey, c.cert.as_deref(), c.key.as_deref()) {
                certificates.push(c);
            }
        }
        let default = match (&file.cert, &file.key) {
            (None, None) if !certificates.is_empty() => certificates[0].clone(),
            (None, None) => {
                self.problem(
                    key,
                    "no certificate; write tls = { cert = \"site.crt\", key = \"site.key\" }",
                );
                CertificateConfig {
                    cert: String::new(),
                    key: String::new(),
                }
            }
            (cert, k) => self
                .certificate(key, cert.as_deref(), k.as_deref())
                .unwrap_or(CertificateConfig {
                    cert: String::new(),
                    key: String::new(),
                }),
        };
        if let Some(ca) = &file.client_ca {
            self.ca_file(format!("{key}.client_ca"), ca);
        }
        let client_cert_optional = match file.client_auth.as_deref() {
            None | Some("required") => false,
            Some("optional") => true,
            Some(other) => {
                self.problem(
                    format!("{key}.client_auth"),
                    format!("`{other}` is not a client_auth; write \"required\" or \"optional\""),
                );
                false
            }
        };
        for (name, set) in [
            ("client_auth", file.client_auth.is_some()),
            ("client_crl", file.client_crl.is_some()),
        ] {
            if set && file.client_ca.is_none() {
                self.problem(
                    format!("{key}.{name}"),
                    "needs client_ca: the CAs that sign the clients' certificates",
                );
            }
        }
        if let Some(crl) = &file.client_crl {
            self.pem_file(format!("{key}.client_crl"), crl, "X509 CRL");
        }
        TlsConfig {
            default,
            certificates,
            session_tickets: file.session_tickets.unwrap_or(true),
            client_ca: file.client_ca.clone(),
            client_cert_optional,
            client_crl: file.client_crl.clone(),
        }
    }

    /// A listener's `access_log` and `access_log_format`; `key` ends in `.`.
    fn access_log(
        &mut self,
        key: &str,
        protocol: Protocol,
        file: &FileListener,
    ) -> Option<AccessLogConfig> {
        let format = match file.access_log_format.as_deref() {
            None | Some("json") => AccessLogFormat::Json,
            Some("combined") => AccessLogFormat::Combined,
            Some(other) => {
                self.problem(
                    format!("{key}access_log_format"),
                    format!("unknown format `{other}`, expected json or combined"),
                );
                AccessLogFormat::Json
            }
        };
        let Some(path) = &file.access_log else {
            if file.access_log_format.is_some() {
                self.problem(
                    format!("{key}access_log_format"),
                    "there is no access_log to format; add access_log = \"PATH\" or remove it",
                );
            }
            return None;
        };
        if protocol != Protocol::Http {
            self.problem(
                format!("{key}access_log"),
                "only http listeners log requests; remove it",
            );
        }
        if path != "-" {
            let dir = std::path::Path::new(path)
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(std::path::Path::new("."));
            if path.is_empty() || path.ends_with('/') || !dir.is_dir() {
                self.problem(
                    format!("{key}access_log"),
                    format!("`{path}` is not a file in an existing directory (\"-\" is standard output)"),
                );
            }
        }
        Some(AccessLogConfig {
            path: path.clone(),
            format,
        })
    }

    fn certificate(
        &mut self,
        key: &str,
        cert: Option<&str>,
        private_key: Option<&str>,
    ) -> Option<CertificateConfig> {
        let mut ok = true;
        for (name, value) in [("cert", cert), ("key", private_key)] {
            match value {
                None => {
                    self.problem(
                        format!("{key}.{name}"),
                        "missing; a certificate needs both `cert` and `key` (PEM files)",
                    );
                    ok = false;
                }
                Some(path) if !std::path::Path::new(path).is_file() => {
                    self.problem(
                        format!("{key}.{name}"),
                        format!("cannot read `{path}`: no such file (relative paths start in the working directory)"),
                    );
                    ok = false;
                }
                Some(_) => {}
            }
        }
        ok.then(|| CertificateConfig {
            cert: cert.unwrap_or_default().to_owned(),
            key: private_key.unwrap_or_default().to_owned(),
        })
    }

    fn route(
        &mut self,
        key: &str,
        file: &FileRoute,
        clusters: &BTreeMap<String, ClusterConfig>,
    ) -> RouteConfig {
        let host = file.host.as_deref().map(|h| {
            let h = h.to_ascii_lowercase();
            match h.strip_prefix('*') {
                Some(suffix) if suffix.starts_with('.') => HostMatch::Suffix(suffix.to_owned()),
                Some(_) => {
                    self.problem(
                        format!("{key}.host"),
                        "a wildcard host must look like \"*.example.com\"",
                    );
                    HostMatch::Exact(h.clone())
                }
                None => HostMatch::Exact(h),
            }
        });
        if let Some(p) = &file.path_prefix {
            if !p.starts_with('/') {
                self.problem(
                    format!("{key}.path_prefix"),
                    format!("`{p}` must start with `/`"),
                );
            }
        }
        let cluster = match &file.cluster {
            Some(c) => {
                self.cluster_ref(&format!("{key}.cluster"), c, clusters);
                c.clone()
            }
            None if file.clusters.is_some() || file.redirect.is_some() => String::new(),
            None => {
                self.problem(
                    format!("{key}.cluster"),
                    "missing; a route must name the cluster it sends to (or set `clusters` or `redirect`)",
                );
                String::new()
            }
        };
        if let Some(p) = &file.priority {
            let classes: Vec<String> =
                match clusters.get(&cluster).and_then(|c| c.admission.as_ref()) {
                    Some(a) => a.classes.clone(),
                    None => DEFAULT_CLASSES.iter().map(|c| c.to_string()).collect(),
                };
            if !classes.contains(p) {
                self.problem(
                    format!("{key}.priority"),
                    format!(
                        "unknown class `{p}` for cluster `{cluster}`, expected one of: {}",
                        classes.join(", ")
                    ),
                );
            }
        }
        let mut route = RouteConfig {
            host,
            path_prefix: file.path_prefix.clone(),
            cluster,
            priority: file.priority.clone(),
            ..RouteConfig::default()
        };
        self.route_rules(key, file, clusters, &mut route);
        route
    }

    fn cluster_ref(&mut self, key: &str, name: &str, clusters: &BTreeMap<String, ClusterConfig>) {
        if !clusters.contains_key(name) {
            let known: Vec<&str> = clusters.keys().map(String::as_str).collect();
            let hint = match suggest(name, &known) {
                Some(s) => format!("; did you mean `{s}`?"),
                None if known.is_empty() => "; define it with [cluster.NAME]".to_owned(),
                None => format!("; defined clusters: {}", known.join(", ")),
            };
            self.problem(key, format!("no cluster named `{name}`{hint}"));
        }
    }

    fn cluster(&mut self, name: &str, file: &FileCluster) -> ClusterConfig {
        let key = |k: &str| format!("cluster.{name}.{k}");
        let algorithm = match file.algorithm.as_deref() {
            None => Algorithm::DEFAULT,
            Some(a) => match a.parse::<Algorithm>() {
                Ok(a) => a,
                Err(e) => {
                    let hint = suggest(a, Algorithm::NAMES)
                        .map(|s| format!(" (did you mean `{s}`?)"))
                        .unwrap_or_default();
                    self.problem(key("algorithm"), format!("{e}{hint}"));
                    Algorithm::DEFAULT
                }
            },
        };
        let mut backends = Vec::new();
        match &file.backends {
            None => self.problem(
                key("backends"),
                "missing; list at least one backend: backends = [{ address = \"127.0.0.1:9001\" }]",
            ),
            Some(list) if list.is_empty() => self.problem(
                key("backends"),
                format!("cluster `{name}` has no backends; list at least one: backends = [{{ address = \"127.0.0.1:9001\" }}]"),
            ),
            Some(list) => {
                let mut seen = HashSet::new();
                for (i, b) in list.iter().enumerate() {
                    let bkey = format!("cluster.{name}.backends[{i}]");
                    if let Some(b) = self.backend(&bkey, b) {
                        if !seen.insert(b.address.clone()) {
                            self.problem(format!("{bkey}.address"), format!("`{}` is listed twice", b.address));
                        }
                        backends.push(b);
                    }
                }
            }
        }
        let mut c = ClusterConfig::new(name, algorithm, backends);
        if let Some(d) = self.duration(&key("connect_timeout"), file.connect_timeout.as_deref()) {
            c.connect_timeout = d;
        }
        if let Some(d) = self.duration(&key("response_timeout"), file.response_timeout.as_deref()) {
            c.response_timeout = d;
        }
        if let Some(d) = self.duration(&key("pool_idle_timeout"), file.pool_idle_timeout.as_deref())
        {
            c.pool_idle_timeout = d;
        }
        if let Some(n) = file.pool_max_idle {
            c.pool_max_idle = n;
        }
        if let Some(d) = self.duration(&key("ewma_decay"), file.ewma_decay.as_deref()) {
            c.ewma_decay = d;
        }
        if let Some(d) = self.duration_or_zero(&key("slow_start"), file.slow_start.as_deref()) {
            c.slow_start = d;
        }
        if let Some(k) = &file.hash_key {
            match HashKey::parse(k) {
                Some(k) => c.hash_key = k,
                None => self.problem(
                    key("hash_key"),
                    format!("`{k}` is not a hash key; write client-ip, path, header:NAME or cookie:NAME"),
                ),
            }
        }
        if let Some(f) = file.balance_factor {
            if !(f.is_finite() && f > 1.0) {
                self.problem(
                    key("balance_factor"),
                    format!("{f} must be greater than 1.0 (1.25 is a good start)"),
                );
            } else {
                c.balance_factor = f;
            }
        }
        if let Some(b) = file.load_reports {
            c.load_reports = b;
        }
        if let Some(b) = file.http2 {
            c.http2 = b;
        }
        c.health = file.health.as_ref().map(|h| self.health(&key("health"), h));
        c.sticky = file.sticky.as_ref().map(|s| self.sticky(&key("sticky"), s));
        self.resilience(name, file, &mut c);
        if let Some(n) = file.geo_max_in_flight {
            if n == 0 {
                self.problem(key("geo_max_in_flight"), "must be at least 1");
            }
            c.geo_max_in_flight = n.max(1);
        }
        c.admission = file
            .admission
            .as_ref()
            .map(|a| self.admission(&key("admission"), a));
        c.tls = self.upstream_tls(name, file);
        c.proxy_protocol = match file.proxy_protocol.as_deref() {
            None | Some("none") => None,
            Some("v1") => Some(ProxyProtocol::V1),
            Some("v2") => Some(ProxyProtocol::V2),
            Some(other) => {
                self.problem(
                    key("proxy_protocol"),
                    format!("unknown PROXY protocol version `{other}`, expected v1 or v2"),
                );
                None
            }
        };
        c
    }

    /// A PEM file of CA certificates at `key`: readable, with at least one.
    fn ca_file(&mut self, key: String, ca: &str) {
        self.pem_file(key, ca, "CERTIFICATE");
    }

    /// A PEM file at `key`: readable, with at least one `label` block.
    fn pem_file(&mut self, key: String, path: &str, label: &str) {
        let begin = format!("-----BEGIN {label}-----");
        let what = if label == "CERTIFICATE" {
            "certificate"
        } else {
            "revocation list"
        };
        match std::fs::read_to_string(path) {
            Ok(text) if text.contains(&begin) => {}
            Ok(_) => self.problem(key, format!("`{path}` holds no PEM {what} ({begin})")),
            Err(e) => self.problem(
                key,
                format!(
                    "cannot read `{path}`: {e} (relative paths start in the working directory)"
                ),
            ),
        }
    }

    /// A cluster's `tls` and its backends' `tls_sni`.
    fn upstream_tls(&mut self, name: &str, file: &FileCluster) -> Option<UpstreamTlsConfig> {
        let key = format!("cluster.{name}.tls");
        let mut backend_sni = BTreeMap::new();
        for (i, b) in file.backends.iter().flatten().enumerate() {
            let Some(sni) = &b.tls_sni else { continue };
            let bkey = format!("cluster.{name}.backends[{i}].tls_sni");
            if file.tls.is_none() {
                self.problem(
                    &bkey,
                    "only used for TLS to backends; add tls = {} to the cluster or remove it",
                );
            }
            self.server_name(&bkey, sni);
            if let Some(address) = &b.address {
                backend_sni.insert(address.clone(), sni.clone());
            }
        }
        let t = file.tls.as_ref()?;
        if let Some(ca) = &t.ca {
            self.ca_file(format!("{key}.ca"), ca);
        }
        if let Some(sni) = &t.sni {
            self.server_name(&format!("{key}.sni"), sni);
        }
        let client_cert = match (&t.cert, &t.key) {
            (None, None) => None,
            (cert, k) => self.certificate(&key, cert.as_deref(), k.as_deref()),
        };
        let verify = t.verify.unwrap_or(true);
        if !verify && t.ca.is_some() {
            self.problem(
                format!("{key}.verify"),
                "verify = false ignores `ca`; remove one of them",
            );
        }
        Some(UpstreamTlsConfig {
            ca: t.ca.clone(),
            sni: t.sni.clone(),
            backend_sni,
            client_cert,
            verify,
        })
    }

    /// A TLS server name: a DNS name or an IP address.
    fn server_name(&mut self, key: &str, name: &str) {
        let ok = !name.is_empty()
            && name.len() <= 253
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':'));
        if !ok {
            self.problem(
                key,
                format!("`{name}` is not a server name; write a DNS name such as \"api.internal\""),
            );
        }
    }

    fn admission(&mut self, key: &str, file: &FileAdmission) -> AdmissionConfig {
        let k = |n: &str| format!("{key}.{n}");
        let adaptive = file.adaptive.unwrap_or(false);
        let limit = match file.limit {
            Some(0) => {
                self.problem(k("limit"), "must be at least 1");
                1
            }
            Some(n) => n,
            None if adaptive => DEFAULT_ADAPTIVE_LIMIT,
            None => {
                self.problem(
                    k("limit"),
                    "missing; set a concurrency limit (limit = 100) or adaptive = true",
                );
                1
            }
        };
        let min_limit = file.min_limit.unwrap_or(1).max(1);
        let max_limit = file.max_limit.unwrap_or(limit.max(1000));
        if !adaptive && (file.min_limit.is_some() || file.max_limit.is_some()) {
            self.problem(
                k("min_limit"),
                "min_limit and max_limit bound an adaptive limit; add adaptive = true or remove them",
            );
        }
        if min_limit > max_limit {
            self.problem(
                k("max_limit"),
                format!("{max_limit} is below min_limit {min_limit}"),
            );
        }
        let queue_timeout = self
            .duration(&k("queue_timeout"), file.queue_timeout.as_deref())
            .unwrap_or(DEFAULT_QUEUE_TIMEOUT);
        let max_queue = file.max_queue.unwrap_or(DEFAULT_MAX_QUEUE);
        let classes: Vec<String> = match &file.classes {
            Some(c) => c.clone(),
            None => DEFAULT_CLASSES.iter().map(|c| c.to_string()).collect(),
        };
        if classes.is_empty() || classes.len() > MAX_CLASSES {
            self.problem(
                k("classes"),
                format!("list 1 to {MAX_CLASSES} class names, most important first, e.g. [\"critical\", \"normal\", \"bulk\"]"),
            );
        }
        let mut seen = HashSet::new();
        for c in &classes {
            if !seen.insert(c) {
                self.problem(k("classes"), format!("class `{c}` is listed twice"));
            }
        }
        let default_name = file.default_class.clone().unwrap_or_else(|| {
            if classes.iter().any(|c| c == "normal") {
                "normal".to_owned()
            } else {
                classes.last().cloned().unwrap_or_default()
            }
        });
        let default_rank = match classes.iter().position(|c| *c == default_name) {
            Some(r) => r as u8,
            None => {
                self.problem(
                    k("default_class"),
                    format!(
                        "unknown class `{default_name}`, expected one of: {}",
                        classes.join(", ")
                    ),
                );
                0
            }
        };
        AdmissionConfig {
            limit: limit.clamp(min_limit, max_limit.max(min_limit)),
            adaptive,
            min_limit,
            max_limit,
            queue_timeout,
            max_queue,
            classes,
            default_rank,
        }
    }

    /// Outlier detection, retries and panic mode of `[cluster.NAME]`.
    fn resilience(&mut self, name: &str, file: &FileCluster, c: &mut ClusterConfig) {
        let key = |k: &str| format!("cluster.{name}.{k}");
        if let Some(o) = &file.outlier {
            let okey = |k: &str| format!("cluster.{name}.outlier.{k}");
            if let Some(n) = o.consecutive_failures {
                c.outlier.consecutive_failures = n;
            }
            if let Some(d) = self.duration(&okey("base_ejection"), o.base_ejection.as_deref()) {
                c.outlier.base_ejection = d;
            }
            if let Some(d) = self.duration(&okey("max_ejection"), o.max_ejection.as_deref()) {
                c.outlier.max_ejection = d;
            }
            if c.outlier.max_ejection < c.outlier.base_ejection {
                self.problem(
                    okey("max_ejection"),
                    format!(
                        "{:?} is shorter than base_ejection {:?}; make it at least as long",
                        c.outlier.max_ejection, c.outlier.base_ejection
                    ),
                );
            }
            if let Some(p) = o.max_ejection_percent {
                if p > 100 {
                    self.problem(
                        okey("max_ejection_percent"),
                        format!("{p} is not a percentage; write 0 to 100 (10 is Envoy's default)"),
                    );
                }
                c.outlier.max_ejection_percent = p.min(100);
            }
        }
        if let Some(n) = file.retries {
            if n > MAX_RETRIES {
                self.problem(
                    key("retries"),
                    format!("{n} is above the maximum {MAX_RETRIES}; retries multiply load on a failing cluster"),
                );
            }
            c.retries = n.min(MAX_RETRIES);
        }
        if let Some(r) = file.retry_budget {
            if !(r.is_finite() && (0.0..=1.0).contains(&r)) {
                self.problem(
                    key("retry_budget"),
                    format!("{r} is not a ratio; write a share of requests between 0.0 and 1.0, e.g. 0.2"),
                );
            } else {
                c.retry_budget = r;
            }
        }
        if let Some(n) = file.retry_budget_min {
            c.retry_budget_min = n;
        }
        if let Some(d) = self.duration(&key("try_timeout"), file.try_timeout.as_deref()) {
            if d > c.response_timeout {
                self.problem(
                    key("try_timeout"),
                    format!(
                        "{d:?} is longer than response_timeout {:?}, which bounds all attempts together; make it shorter",
                        c.response_timeout
                    ),
                );
            }
            c.try_timeout = Some(d);
        }
        if let Some(p) = file.panic_threshold {
            if p > 100 {
                self.problem(
                    key("panic_threshold"),
                    format!("{p} is not a percentage; write 0 (never) to 100, 50 is the default"),
                );
            }
            c.panic_threshold = p.min(100);
        }
    }

    fn backend(&mut self, key: &str, file: &FileBackend) -> Option<BackendConfig> {
        let address = match &file.address {
            Some(a) => a.clone(),
            None => {
                self.problem(
                    format!("{key}.address"),
                    "missing; write the backend as { address = \"127.0.0.1:9001\" }",
                );
                return None;
            }
        };
        if !valid_host_port(&address) {
            self.problem(
                format!("{key}.address"),
                format!(
                    "`{address}` is not host:port, e.g. \"127.0.0.1:9001\" or \"app.internal:80\""
                ),
            );
        }
        let weight = file.weight.unwrap_or(1);
        if weight > MAX_WEIGHT {
            self.problem(
                format!("{key}.weight"),
                format!("{weight} is above the maximum {MAX_WEIGHT}"),
            );
        }
        let state = match file.state.as_deref() {
            None => AdminState::Enabled,
            Some(s) => AdminState::parse(s).unwrap_or_else(|| {
                self.problem(
                    format!("{key}.state"),
                    format!("unknown state `{s}`, expected one of: enabled, draining, disabled"),
                );
                AdminState::Enabled
            }),
        };
        let location = self.location(key, file);
        Some(BackendConfig {
            address,
            weight,
            state,
            location,
        })
    }

    /// `zone`, `region`, `lat`, `lon` of a backend.
    fn location(&mut self, key: &str, file: &FileBackend) -> Option<Location> {
        let point = match (file.lat, file.lon) {
            (None, None) => None,
            (Some(lat), Some(lon)) => {
                let p = GeoPoint::new(lat, lon);
                if p.is_none() {
                    self.problem(
                        format!("{key}.lat"),
                        format!("({lat}, {lon}) is not a position; lat is -90..90 and lon -180..180 degrees"),
                    );
                }
                p
            }
            (Some(_), None) | (None, Some(_)) => {
                self.problem(format!("{key}.lat"), "give both lat and lon, or neither");
                None
            }
        };
        if file.zone.is_none() && file.region.is_none() && point.is_none() {
            return None;
        }
        Some(Location {
            zone: file.zone.as_deref().map(Into::into),
            region: file.region.as_deref().map(Into::into),
            point,
        })
    }

    fn health(&mut self, key: &str, file: &FileHealth) -> HealthConfig {
        let mut h = HealthConfig::default();
        match file.kind.as_deref() {
            None | Some("http") => {
                let path = file.path.clone().unwrap_or_else(|| "/healthz".into());
                if !path.starts_with('/') {
                    self.problem(
                        format!("{key}.path"),
                        format!("`{path}` must start with `/`"),
                    );
                }
                h.kind = HealthKind::Http { path };
            }
            Some(kind @ ("tcp" | "grpc")) => {
                if file.path.is_some() {
                    self.problem(
                        format!("{key}.path"),
                        "only http checks have a path; remove it or set type = \"http\"",
                    );
                }
                h.kind = if kind == "tcp" {
                    HealthKind::Tcp
                } else {
                    HealthKind::Grpc {
                        service: file.service.clone().unwrap_or_default(),
                    }
                };
            }
            Some(other) => self.problem(
                format!("{key}.type"),
                format!("unknown check type `{other}`, expected http, tcp or grpc"),
            ),
        }
        if file.service.is_some() && !matches!(h.kind, HealthKind::Grpc { .. }) {
            self.problem(
                format!("{key}.service"),
                "only grpc checks have this; remove it or set type = \"grpc\"",
            );
        }
        if let Some(d) = self.duration(&format!("{key}.interval"), file.interval.as_deref()) {
            h.interval = d;
        }
        if let Some(d) = self.duration(&format!("{key}.timeout"), file.timeout.as_deref()) {
            h.timeout = d;
        }
        h.jitter = h.interval / 10;
        h.unhealthy_interval = h.interval / 2;
        if let Some(d) = self.duration_or_zero(&format!("{key}.jitter"), file.jitter.as_deref()) {
            h.jitter = d;
        }
        if let Some(d) = self.duration(
            &format!("{key}.unhealthy_interval"),
            file.unhealthy_interval.as_deref(),
        ) {
            h.unhealthy_interval = d;
        }
        self.http_check(key, file, &mut h);
        self.tcp_check(key, file, &mut h);
        for (name, value, slot) in [
            ("rise", file.rise, &mut h.rise),
            ("fall", file.fall, &mut h.fall),
        ] {
            if let Some(v) = value {
                if v == 0 {
                    self.problems
                        .push(Problem::new(format!("{key}.{name}"), "must be at least 1"));
                }
                *slot = v;
            }
        }
        h
    }

    /// The TCP-only keys of `[cluster.NAME.health]`: `send` and `expect`.
    fn tcp_check(&mut self, key: &str, file: &FileHealth, h: &mut HealthConfig) {
        let tcp = h.kind == HealthKind::Tcp;
        for (name, value, slot) in [
            ("send", &file.send, &mut h.send),
            ("expect", &file.expect, &mut h.expect),
        ] {
            let Some(v) = value else { continue };
            if !tcp {
                self.problem(
                    format!("{key}.{name}"),
                    "only tcp checks have this; remove it or set type = \"tcp\"",
                );
            } else if v.is_empty() {
                self.problem(
                    format!("{key}.{name}"),
                    "is empty; remove it or write the bytes, e.g. \"PING\\r\\n\"",
                );
            }
            *slot = Some(v.clone());
        }
    }

    /// The HTTP-only keys of `[cluster.NAME.health]` (gRPC checks take
    /// `host` too).
    fn http_check(&mut self, key: &str, file: &FileHealth, h: &mut HealthConfig) {
        let http = matches!(h.kind, HealthKind::Http { .. });
        let grpc = matches!(h.kind, HealthKind::Grpc { .. });
        for (name, set, also_grpc) in [
            ("method", file.method.is_some(), false),
            ("host", file.host.is_some(), true),
            ("expect_status", file.expect_status.is_some(), false),
            ("body_contains", file.body_contains.is_some(), false),
        ] {
            if set && !http && !(grpc && also_grpc) {
                self.problem(
                    format!("{key}.{name}"),
                    "only http checks have this; remove it or set type = \"http\"",
                );
            }
        }
        if let Some(m) = &file.method {
            if m.is_empty() || !m.bytes().all(|b| b.is_ascii_uppercase()) {
                self.problem(
                    format!("{key}.method"),
                    format!("`{m}` is not an HTTP method; write e.g. \"GET\" or \"HEAD\""),
                );
            }
            h.method = m.clone();
        }
        if let Some(host) = &file.host {
            if host.is_empty()
                || host
                    .bytes()
                    .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
            {
                self.problem(
                    format!("{key}.host"),
                    format!("`{host}` is not a host name; write e.g. \"app.example.com\""),
                );
            }
            h.host = Some(host.clone());
        }
        if let Some(text) = &file.expect_status {
            match parse_status_ranges(text) {
                Some(ranges) => h.expect_status = ranges,
                None => self.problem(
                    format!("{key}.expect_status"),
                    format!("`{text}` is not a status list; write ranges and codes such as \"200-399\" or \"200,204\""),
                ),
            }
        }
        if let Some(b) = &file.body_contains {
            if b.is_empty() {
                self.problem(
                    format!("{key}.body_contains"),
                    "is empty; remove it or write the text a healthy answer contains",
                );
            }
            h.body_contains = Some(b.clone());
        }
    }

    fn socket_addr(&mut self, key: &str, s: &str) -> Option<SocketAddr> {
        match s.parse() {
            Ok(a) => Some(a),
            Err(_) => {
                self.problem(
                    key,
                    format!("`{s}` is not an ip:port address such as \"127.0.0.1:8080\""),
                );
                None
            }
        }
    }

    /// A positive duration such as `"500ms"`, `"2s"`, `"1m"`.
    fn duration(&mut self, key: &str, s: Option<&str>) -> Option<Duration> {
        let d = self.duration_or_zero(key, s)?;
        if d.is_zero() {
            self.problem(key, "must be greater than zero");
            return None;
        }
        Some(d)
    }

    fn duration_or_zero(&mut self, key: &str, s: Option<&str>) -> Option<Duration> {
        let s = s?;
        match humantime::parse_duration(s) {
            Ok(d) => Some(d),
            Err(e) => {
                self.problem(
                    key,
                    format!(
                        "`{s}` is not a duration ({e}); write e.g. \"500ms\", \"2s\" or \"1m\""
                    ),
                );
                None
            }
        }
    }
}

/// Parses `"200-399"`, `"200,204"`, `"200-299, 404"` into inclusive ranges
/// of valid statuses (100..=599).
pub(crate) fn parse_status_ranges(text: &str) -> Option<Vec<(u16, u16)>> {
    let mut out = Vec::new();
    for part in text.split(',') {
        let part = part.trim();
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (a.trim().parse().ok()?, b.trim().parse().ok()?),
            None => {
                let s = part.parse().ok()?;
                (s, s)
            }
        };
        if !(100..=599).contains(&lo) || !(100..=599).contains(&hi) || lo > hi {
            return None;
        }
        out.push((lo, hi));
    }
    Some(out)
}

pub(crate) fn valid_host_port(s: &str) -> bool {
    if s.parse::<SocketAddr>().is_ok() {
        return true;
    }
    match s.rsplit_once(':') {
        Some((host, port)) => {
            !host.is_empty()
                && port.parse::<u16>().is_ok_and(|p| p != 0)
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        }
        None => false,
    }
}
