//! `fulcrum demo`: the embedded default.
//!
//! Starts three testbed backends on loopback — two quick ones and one ten
//! times slower — and the proxy in front of them with the default
//! algorithm, using a configuration generated here and validated like any
//! file. Prints what to try, then runs until Ctrl-C.

use std::net::SocketAddr;

use fulcrum_testbed::{spawn_backend, BackendOptions};

/// Arguments of `fulcrum demo`.
#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Address of the proxy listener.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Address of the admin API.
    #[arg(long, default_value = fulcrum_config::DEFAULT_ADMIN_BIND)]
    admin: SocketAddr,
}

/// The demo's backends: (name, latency).
const BACKENDS: [(&str, &str); 3] = [
    ("alpha", "2ms..6ms"),
    ("beta", "2ms..6ms"),
    ("gamma", "40ms..60ms"),
];

/// The demo configuration for the given addresses.
pub fn demo_config(listen: SocketAddr, admin: SocketAddr, backends: &[SocketAddr]) -> String {
    let list: Vec<String> = backends
        .iter()
        .map(|a| format!("  {{ address = \"{a}\", weight = 1 }},"))
        .collect();
    format!(
        r#"# The configuration `fulcrum demo` runs with.
[admin]
bind = "{admin}"

[[listener]]
name = "web"
bind = "{listen}"
protocol = "http"
cluster = "app"
debug_from = ["127.0.0.0/8", "::1"]

[cluster.app]
# A short peak-EWMA memory (the default is 10s) so the demo visibly
# forgives the slow backend and tries it again every few seconds.
ewma_decay = "1s"
backends = [
{}
]

# Active health checks: a backend that dies is taken out within about a second.
[cluster.app.health]
path = "/healthz"
interval = "500ms"
timeout = "300ms"
rise = 2
fall = 2
"#,
        list.join("\n")
    )
}

/// Runs the demo until Ctrl-C.
pub fn demo(args: DemoArgs) -> anyhow::Result<()> {
    let rt = crate::tokio_runtime(None)?;
    rt.block_on(async move {
        let signals = crate::run::StopSignals::install()?;
        let mut running = Vec::new();
        for (name, latency) in BACKENDS {
            let mut opts = BackendOptions::new(name);
            opts.latency = latency.parse().map_err(|e| anyhow::anyhow!("{e}"))?;
            opts.load_report = true;
            running.push(spawn_backend(opts).await?);
        }
        let addrs: Vec<SocketAddr> = running.iter().map(|b| b.addr).collect();
        let text = demo_config(args.listen, args.admin, &addrs);
        let config =
            fulcrum_config::parse(&text, Some("<demo>")).map_err(|e| anyhow::anyhow!("{e}"))?;
        let algorithm = config.clusters["app"].algorithm;
        // The demo has no token file: use FULCRUM_ADMIN_TOKEN, or make a
        // throwaway token so the dashboard's buttons work (shown below, once,
        // on the terminal of whoever started the demo; never logged).
        let (token, generated) =
            match fulcrum_proxy::admin::load_token(&config.admin, config.admin.bind)? {
                Some(t) => (t, None),
                None => {
                    let value = format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
                    let t = fulcrum_proxy::admin::Token::new(&value).expect("not empty");
                    (t, Some(value))
                }
            };
        let runtime = fulcrum_proxy::Runtime::new(config);
        let server = fulcrum_proxy::Server::start(std::sync::Arc::clone(&runtime)).await?;
        let listen = server
            .local_addr("web")
            .expect("the demo listener is bound");
        let admin =
            crate::run::start_admin(&runtime, &server, args.admin, Some(token), None).await?;
        let admin_addr = admin.local_addr();
        println!("Fulcrum demo: proxy on http://{listen}, algorithm `{algorithm}`");
        for b in &running {
            let slow = if b.name == "gamma" {
                "  (10x slower)"
            } else {
                ""
            };
            println!("  backend {:<6} http://{}{slow}", b.name, b.addr);
        }
        println!("  dashboard      http://{admin_addr}/");
        match &generated {
            Some(t) => println!("  admin token    {t}  (generated for this demo; set FULCRUM_ADMIN_TOKEN to choose one)"),
            None => println!("  admin token    from FULCRUM_ADMIN_TOKEN"),
        }
        println!();
        println!("Try:");
        println!("  curl -s http://{listen}/                      # answered by one backend");
        println!("  for i in $(seq 20); do curl -s http://{listen}/; done | sort | uniq -c");
        println!("  curl -si -H 'x-fulcrum-debug: 1' http://{listen}/ | grep -i x-fulcrum");
        println!("  curl -s http://{admin_addr}/api/v1/clusters        # live view as JSON");
        println!("  curl -s http://{admin_addr}/metrics                # Prometheus");
        println!();
        println!("Ctrl-C stops everything.");
        signals.wait(&runtime, None).await;
        admin.shutdown().await;
        crate::run::stop(server).await;
        for b in running {
            b.shutdown().await;
        }
        Ok(())
    })
}
