//! L4 UDP: datagrams forwarded per flow.
//!
//! A flow is one client address. Its first datagram picks a backend from the
//! listener's cluster (hash key: the client IP, so `ring-hash` and `maglev`
//! keep a client on one backend across flows and proxies; any selector
//! works) and opens a connected socket to it; later datagrams of the flow
//! go to the same backend, and the backend's replies on that socket go back
//! to the client from the listener's address. A flow with no datagram in
//! either direction for the listener's `idle_timeout` ends.
//!
//! The flow table is bounded by `max_flows`: a datagram that would open a
//! flow beyond it is dropped (UDP's answer to overload; the client
//! retries), so a spoofed-source flood cannot exhaust sockets or memory.
//! The table is owned by the receive loop alone; flow tasks report their
//! end through a channel, so no lock is taken per datagram.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fulcrum_balance::PickContext;
use fulcrum_config::ListenerConfig;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};

use crate::clock;
use crate::state::Runtime;

/// Largest datagram relayed: the UDP maximum, so nothing is ever truncated.
const MAX_DATAGRAM: usize = 65_535;

/// One client's flow.
struct Flow {
    upstream: Arc<UdpSocket>,
    activity: Arc<AtomicU64>,
    closed: Arc<AtomicBool>,
}

/// The receive loop of one udp listener.
pub(crate) async fn serve(
    socket: UdpSocket,
    config: ListenerConfig,
    runtime: Arc<Runtime>,
    mut shutdown: watch::Receiver<bool>,
    alive: mpsc::Sender<()>,
) {
    let socket = Arc::new(socket);
    let name = config.name.clone();
    let mut flows: HashMap<SocketAddr, Flow> = HashMap::new();
    let (ended_tx, mut ended) = mpsc::unbounded_channel::<(SocketAddr, Arc<AtomicBool>)>();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let (n, client) = tokio::select! {
            r = socket.recv_from(&mut buf) => match r {
                Ok(x) => x,
                Err(e) => {
                    // ICMP errors surface here on some systems; keep serving.
                    tracing::debug!(listener = %name, error = %e, "udp receive failed");
                    continue;
                }
            },
            Some((addr, closed)) = ended.recv() => {
                if flows.get(&addr).is_some_and(|f| Arc::ptr_eq(&f.closed, &closed)) {
                    flows.remove(&addr);
                }
                continue;
            }
            _ = shutdown.changed() => break,
        };
        if flows
            .get(&client)
            .is_some_and(|f| f.closed.load(Ordering::Acquire))
        {
            flows.remove(&client);
        }
        if !flows.contains_key(&client) {
            if flows.len() >= config.max_flows {
                tracing::debug!(listener = %name, %client, "flow table full; datagram dropped");
                continue;
            }
            match open_flow(&runtime, &name, client).await {
                Ok((flow, guard)) => {
                    let idle = runtime
                        .snapshot()
                        .listeners
                        .get(&name)
                        .map_or(config.limits.idle_timeout, |l| l.config.limits.idle_timeout);
                    tokio::spawn(relay_replies(
                        Arc::clone(&socket),
                        client,
                        Arc::clone(&flow.upstream),
                        Arc::clone(&flow.activity),
                        Arc::clone(&flow.closed),
                        idle,
                        ended_tx.clone(),
                        shutdown.clone(),
                        alive.clone(),
                        guard,
                    ));
                    flows.insert(client, flow);
                }
                Err(e) => {
                    tracing::debug!(listener = %name, %client, error = %e, "no backend for udp flow");
                    continue;
                }
            }
        }
        let flow = &flows[&client];
        flow.activity.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = flow.upstream.send(&buf[..n]).await {
            tracing::debug!(listener = %name, %client, error = %e, "udp send to backend failed");
        }
    }
    drop(alive);
    tracing::debug!(listener = %name, "stopped receiving");
}

/// Picks a backend for a new flow and opens a socket connected to it.
async fn open_flow(
    runtime: &Runtime,
    listener: &str,
    client: SocketAddr,
) -> io::Result<(Flow, fulcrum_balance::InFlightGuard)> {
    let not_found = |what: &str| io::Error::new(io::ErrorKind::NotFound, what.to_owned());
    let (address, guard) = {
        let snapshot = runtime.snapshot();
        let cluster = snapshot
            .listeners
            .get(listener)
            .and_then(|l| l.config.cluster.as_ref())
            .and_then(|c| snapshot.clusters.get(c))
            .ok_or_else(|| not_found("no cluster"))?;
        let mut rng = fastrand::Rng::new();
        let mut ctx = PickContext {
            client: None,
            now: clock::now(),
            key: Some(crate::tcp::client_key(client)),
            rng: &mut rng,
            exclude: &[],
            ignore_health: false,
        };
        let id = fulcrum_balance::selector::pick_or_fall_back(
            cluster.selector.as_ref(),
            &cluster.set,
            &mut ctx,
            None,
        )
        .ok_or_else(|| not_found("no usable backend"))?;
        let backend = cluster.set.get(id);
        (backend.address.clone(), backend.state.load.start())
    };
    let target = tokio::net::lookup_host(address.as_str())
        .await?
        .next()
        .ok_or_else(|| not_found("backend address does not resolve"))?;
    let bind: SocketAddr = if target.is_ipv4() {
        "0.0.0.0:0".parse().expect("valid")
    } else {
        "[::]:0".parse().expect("valid")
    };
    let upstream = UdpSocket::bind(bind).await?;
    upstream.connect(target).await?;
    Ok((
        Flow {
            upstream: Arc::new(upstream),
            activity: Arc::new(AtomicU64::new(0)),
            closed: Arc::new(AtomicBool::new(false)),
        },
        guard,
    ))
}

/// Sends a flow's replies back to its client until the flow is idle.
#[allow(clippy::too_many_arguments)]
async fn relay_replies(
    listener: Arc<UdpSocket>,
    client: SocketAddr,
    upstream: Arc<UdpSocket>,
    activity: Arc<AtomicU64>,
    closed: Arc<AtomicBool>,
    idle: Duration,
    ended: mpsc::UnboundedSender<(SocketAddr, Arc<AtomicBool>)>,
    mut shutdown: watch::Receiver<bool>,
    alive: mpsc::Sender<()>,
    guard: fulcrum_balance::InFlightGuard,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut ticker = crate::clock::idle_ticker(idle);
    let mut seen = activity.load(Ordering::Relaxed);
    loop {
        tokio::select! {
            r = upstream.recv(&mut buf) => match r {
                Ok(n) => {
                    activity.fetch_add(1, Ordering::Relaxed);
                    let _ = listener.send_to(&buf[..n], client).await;
                }
                // A refused port (ICMP) on a connected socket: the flow is dead.
                Err(_) => break,
            },
            _ = ticker.tick() => {
                let now = activity.load(Ordering::Relaxed);
                if now == seen {
                    break;
                }
                seen = now;
            }
            _ = shutdown.changed() => break,
        }
    }
    closed.store(true, Ordering::Release);
    let _ = ended.send((client, closed));
    drop(guard);
    drop(alive);
}
