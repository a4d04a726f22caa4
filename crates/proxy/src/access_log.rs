//! Access logs: one line per request, per listener (`access_log`).
//!
//! A request on a listener with an access log starts a [`Pending`] entry
//! with what the request said (method, target, host, user agent) before
//! the request path rewrites it; the answer adds its status and, when a
//! backend answered, the cluster, the backend and the attempts it took
//! ([`Served`]). The entry rides in the answer's body, counts the body's
//! bytes as they go out, and is written when the body is dropped: after
//! its last byte, or when the client went away (`"complete": false`).
//! `duration_ms` is from the request's head to then, as NGINX's
//! `$request_time`.
//!
//! Lines are formatted in the request's task and handed to a writer
//! thread per log through a bounded queue; the thread appends them to the
//! file and flushes whenever the queue runs empty, so a burst costs one
//! write. A full queue (the disk cannot keep up) drops lines rather than
//! slow requests down, and counts them
//! (`fulcrum_access_log_dropped_lines_total`). Every applied configuration
//! (start, reload, API change) opens the file again, so a rotated file
//! (`logrotate` without `copytruncate`) is followed after a reload.
//!
//! Listeners without `access_log` pay one atomic load per request.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwapOption;
use fulcrum_config::{AccessLogConfig, AccessLogFormat};
use http::{header, request, HeaderValue, Method, Version};

/// Lines waiting for the writer thread at most.
const QUEUE: usize = 65_536;

/// Where a listener's lines go.
#[derive(Debug)]
struct Sink {
    lines: SyncSender<Vec<u8>>,
    format: AccessLogFormat,
}

/// One listener's access log; it lives as long as the process, and its
/// file changes with the configuration.
#[derive(Debug)]
pub struct AccessLog {
    listener: Arc<str>,
    on: AtomicBool,
    sink: ArcSwapOption<Sink>,
    dropped: AtomicU64,
}

impl AccessLog {
    fn new(listener: &str) -> Self {
        AccessLog {
            listener: Arc::from(listener),
            on: AtomicBool::new(false),
            sink: ArcSwapOption::empty(),
            dropped: AtomicU64::new(0),
        }
    }

    /// Whether requests are logged.
    #[inline]
    pub fn enabled(&self) -> bool {
        self.on.load(Ordering::Relaxed)
    }

    /// Lines dropped because the writer could not keep up.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Logs to `config`'s file from now on (opened anew), or stops. A
    /// file that cannot be opened keeps the previous one and logs why.
    fn configure(&self, config: Option<&AccessLogConfig>) {
        let Some(config) = config else {
            self.on.store(false, Ordering::Relaxed);
            self.sink.store(None);
            return;
        };
        match open(config) {
            Ok(sink) => {
                self.sink.store(Some(Arc::new(sink)));
                self.on.store(true, Ordering::Relaxed);
            }
            Err(e) => {
                tracing::error!(listener = %self.listener, path = %config.path, error = %e, "cannot open the access log; keeping the previous one");
            }
        }
    }

    fn write(&self, entry: &Pending) {
        let Some(sink) = self.sink.load_full() else {
            return;
        };
        let mut line = Vec::with_capacity(256);
        match sink.format {
            AccessLogFormat::Json => entry.json(&self.listener, &mut line),
            AccessLogFormat::Combined => entry.combined(&mut line),
        }
        line.push(b'\n');
        if let Err(TrySendError::Full(_)) = sink.lines.try_send(line) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Opens `config`'s file (or standard output) and starts its writer.
fn open(config: &AccessLogConfig) -> std::io::Result<Sink> {
    let out: Box<dyn std::io::Write + Send> = if config.path == "-" {
        Box::new(std::io::stdout())
    } else {
        Box::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&config.path)?,
        )
    };
    let (lines, queue) = mpsc::sync_channel::<Vec<u8>>(QUEUE);
    let path = config.path.clone();
    std::thread::Builder::new()
        .name("access-log".into())
        .spawn(move || write_lines(out, &queue, &path))?;
    Ok(Sink {
        lines,
        format: config.format,
    })
}

/// The writer thread: appends lines as they come, flushing whenever none
/// is waiting, until the log is closed (its sink dropped).
fn write_lines(out: Box<dyn std::io::Write + Send>, queue: &mpsc::Receiver<Vec<u8>>, path: &str) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, out);
    let mut failing = false;
    while let Ok(line) = queue.recv() {
        let mut result = out.write_all(&line);
        while let Ok(line) = queue.try_recv() {
            result = result.and_then(|()| out.write_all(&line));
        }
        result = result.and_then(|()| out.flush());
        match result {
            Err(e) if !failing => {
                tracing::error!(path, error = %e, "cannot write the access log");
                failing = true;
            }
            Ok(()) => failing = false,
            Err(_) => {}
        }
    }
}

/// Every listener's access log, by listener name.
#[derive(Debug, Default)]
pub struct AccessLogs {
    logs: Mutex<HashMap<String, Arc<AccessLog>>>,
}

impl AccessLogs {
    /// Listener `name`'s log (off until configured).
    pub fn get(&self, name: &str) -> Arc<AccessLog> {
        let mut logs = self.logs.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(
            logs.entry(name.to_owned())
                .or_insert_with(|| Arc::new(AccessLog::new(name))),
        )
    }

    /// Applies the listeners' `access_log` settings; listeners not in
    /// `listeners` stop logging.
    pub fn configure<'a>(
        &self,
        listeners: impl IntoIterator<Item = (&'a str, Option<&'a AccessLogConfig>)>,
    ) {
        let mut wanted: HashMap<&str, Option<&AccessLogConfig>> = listeners.into_iter().collect();
        let mut logs = self.logs.lock().unwrap_or_else(|e| e.into_inner());
        for (name, log) in logs.iter() {
            log.configure(wanted.remove(name.as_str()).flatten());
        }
        for (name, config) in wanted {
            if let Some(config) = config {
                let log = Arc::new(AccessLog::new(name));
                log.configure(Some(config));
                logs.insert(name.to_owned(), log);
            }
        }
    }

    /// Each log's listener and dropped lines, for the metrics.
    pub fn dropped(&self) -> Vec<(String, u64)> {
        let logs = self.logs.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<(String, u64)> = logs
            .iter()
            .filter(|(_, l)| l.enabled() || l.dropped() > 0)
            .map(|(n, l)| (n.clone(), l.dropped()))
            .collect();
        out.sort();
        out
    }
}

/// Which backend answered a request, for its log line (put in the
/// answer's extensions by the request path when the listener logs).
#[derive(Clone, Debug)]
pub struct Served {
    /// The cluster's name.
    pub cluster: Arc<str>,
    /// The backend's address.
    pub backend: Arc<str>,
    /// Attempts made, the answered one included.
    pub attempts: u32,
}

/// A request's log entry, written when dropped.
#[derive(Debug)]
pub struct Pending {
    log: Arc<AccessLog>,
    at: SystemTime,
    started: Instant,
    client: SocketAddr,
    method: Method,
    target: String,
    version: Version,
    host: Option<HeaderValue>,
    user_agent: Option<HeaderValue>,
    referer: Option<HeaderValue>,
    status: u16,
    served: Option<Served>,
    bytes: u64,
    complete: bool,
}

impl Pending {
    /// An entry for the request `head` from `client`, taken before the
    /// request path changes the head.
    pub fn start(log: &Arc<AccessLog>, client: SocketAddr, head: &request::Parts) -> Box<Self> {
        let host = head.headers.get(header::HOST).cloned().or_else(|| {
            head.uri
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        });
        Box::new(Pending {
            log: Arc::clone(log),
            at: SystemTime::now(),
            started: Instant::now(),
            client,
            method: head.method.clone(),
            target: head
                .uri
                .path_and_query()
                .map_or_else(|| head.uri.to_string(), |p| p.as_str().to_owned()),
            version: head.version,
            host,
            user_agent: head.headers.get(header::USER_AGENT).cloned(),
            referer: head.headers.get(header::REFERER).cloned(),
            status: 0,
            served: None,
            bytes: 0,
            complete: false,
        })
    }

    /// The answer's status and, if a backend gave it, which.
    pub fn answered(&mut self, status: u16, served: Option<Served>) {
        self.status = status;
        self.served = served;
    }

    /// Counts `n` bytes of the answer's body sent.
    #[inline]
    pub fn sent(&mut self, n: usize) {
        self.bytes += n as u64;
    }

    /// The answer's body went out to its end.
    pub fn finished(&mut self) {
        self.complete = true;
    }

    fn duration_ms(&self) -> f64 {
        self.started.elapsed().as_secs_f64() * 1000.0
    }

    fn json(&self, listener: &str, out: &mut Vec<u8>) {
        let text = |v: &Option<HeaderValue>| {
            v.as_ref()
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        };
        let entry = serde_json::json!({
            "time": rfc3339(self.at),
            "listener": listener,
            "client": self.client.to_string(),
            "method": self.method.as_str(),
            "target": self.target,
            "protocol": version(self.version),
            "host": text(&self.host),
            "status": self.status,
            "bytes": self.bytes,
            "duration_ms": (self.duration_ms() * 1000.0).round() / 1000.0,
            "cluster": self.served.as_ref().map(|s| &*s.cluster),
            "backend": self.served.as_ref().map(|s| &*s.backend),
            "attempts": self.served.as_ref().map(|s| s.attempts),
            "user_agent": text(&self.user_agent),
            "referer": text(&self.referer),
            "complete": self.complete,
        });
        let _ = serde_json::to_writer(&mut *out, &entry);
    }

    /// NGINX's `combined` format (`$remote_addr - - [$time_local]
    /// "$request" $status $body_bytes_sent "$http_referer"
    /// "$http_user_agent"`, time in UTC), then the request time in seconds
    /// and the backend (`-` for none).
    fn combined(&self, out: &mut Vec<u8>) {
        let mut line = String::with_capacity(200);
        let _ = write!(
            line,
            "{} - - [{}] \"{} ",
            self.client.ip(),
            clf_time(self.at),
            self.method
        );
        quoted(&mut line, self.target.as_bytes());
        let _ = write!(
            line,
            " {}\" {} {} \"",
            version(self.version),
            self.status,
            self.bytes
        );
        quoted(
            &mut line,
            self.referer.as_ref().map_or(b"-", |v| v.as_bytes()),
        );
        line.push_str("\" \"");
        quoted(
            &mut line,
            self.user_agent.as_ref().map_or(b"-", |v| v.as_bytes()),
        );
        let backend = self.served.as_ref().map_or("-", |s| &*s.backend);
        let _ = write!(line, "\" {:.3} {backend}", self.duration_ms() / 1000.0);
        out.extend_from_slice(line.as_bytes());
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        let log = Arc::clone(&self.log);
        log.write(self);
    }
}

fn version(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

/// Bytes inside a quoted field: `"`, `\` and anything outside printable
/// ASCII as `\xHH`, as NGINX escapes its variables.
fn quoted(out: &mut String, bytes: &[u8]) {
    for &b in bytes {
        if (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\' {
            out.push(b as char);
        } else {
            let _ = write!(out, "\\x{b:02X}");
        }
    }
}

/// Year, month, day, hour, minute, second and millisecond of `t` in UTC.
fn civil(t: SystemTime) -> (i64, u32, u32, u32, u32, u32, u32) {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs() as i64;
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400) as u32);
    // Days to a proleptic Gregorian date (H. Hinnant's `civil_from_days`).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (
        year,
        month,
        day,
        rest / 3_600,
        rest % 3_600 / 60,
        rest % 60,
        since.subsec_millis(),
    )
}

/// `2026-11-27T06:57:02.123Z`.
fn rfc3339(t: SystemTime) -> String {
    let (y, mo, d, h, mi, s, ms) = civil(t);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{ms:03}Z")
}

/// `27/Nov/2026:06:57:02 +0000`.
fn clf_time(t: SystemTime) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (y, mo, d, h, mi, s, _) = civil(t);
    format!(
        "{d:02}/{}/{y:04}:{h:02}:{mi:02}:{s:02} +0000",
        MONTHS[mo as usize - 1]
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn times_are_written_in_utc() {
        let t = UNIX_EPOCH + Duration::from_millis(1_795_762_622_123);
        assert_eq!(rfc3339(t), "2026-11-27T06:57:02.123Z");
        assert_eq!(clf_time(t), "27/Nov/2026:06:57:02 +0000");
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        // A leap day.
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn lines_carry_the_request_and_its_answer() {
        let log = Arc::new(AccessLog::new("web"));
        let head = http::Request::get("/a?b=c")
            .header(header::HOST, "example.com")
            .header(header::USER_AGENT, "curl/8 \"x\"")
            .body(())
            .unwrap()
            .into_parts()
            .0;
        let mut entry = Pending::start(&log, "10.0.0.1:5555".parse().unwrap(), &head);
        entry.answered(
            200,
            Some(Served {
                cluster: Arc::from("app"),
                backend: Arc::from("127.0.0.1:9001"),
                attempts: 2,
            }),
        );
        entry.sent(10);
        entry.sent(5);
        entry.finished();
        let mut json = Vec::new();
        entry.json("web", &mut json);
        let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(v["listener"], "web");
        assert_eq!(v["client"], "10.0.0.1:5555");
        assert_eq!(v["method"], "GET");
        assert_eq!(v["target"], "/a?b=c");
        assert_eq!(v["protocol"], "HTTP/1.1");
        assert_eq!(v["host"], "example.com");
        assert_eq!(v["status"], 200);
        assert_eq!(v["bytes"], 15);
        assert_eq!(v["cluster"], "app");
        assert_eq!(v["backend"], "127.0.0.1:9001");
        assert_eq!(v["attempts"], 2);
        assert_eq!(v["user_agent"], "curl/8 \"x\"");
        assert_eq!(v["referer"], serde_json::Value::Null);
        assert_eq!(v["complete"], true);
        let mut line = Vec::new();
        entry.combined(&mut line);
        let line = String::from_utf8(line).unwrap();
        assert!(line.starts_with("10.0.0.1 - - ["), "{line}");
        assert!(
            line.contains("] \"GET /a?b=c HTTP/1.1\" 200 15 \"-\" \"curl/8 \\x22x\\x22\" "),
            "{line}"
        );
        assert!(line.ends_with(" 127.0.0.1:9001"), "{line}");
    }
}
