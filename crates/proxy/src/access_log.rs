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
//! thread per log through a bounded queue; the thread gathers what comes
//! within 50 ms of a first line and writes it at once, so a burst costs
//! one write and one wake-up of the thread. A full queue (the disk cannot
//! keep up) drops lines rather than slow requests down, and counts them
//! (`fulcrum_access_log_dropped_lines_total`). Every applied configuration
//! (start, reload, API change) opens the file again, so a rotated file
//! (`logrotate` without `copytruncate`) is followed after a reload.
//!
//! Listeners without `access_log` pay two atomic loads per request.

use std::collections::HashMap;
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
    /// Whether `sink` is set: what every request checks, one atomic load
    /// where the `ArcSwap` would cost a guard.
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

/// How long the writer gathers lines after the first of a batch before it
/// writes them: one system call and one wake-up of the thread per batch
/// instead of per line, and lines in the file within this long.
const BATCH: std::time::Duration = std::time::Duration::from_millis(50);

/// The writer thread: waits for a line, gathers what else comes within
/// [`BATCH`] (without being woken for each), writes and flushes, until
/// the log is closed (its sink dropped; the lines left are written).
fn write_lines(out: Box<dyn std::io::Write + Send>, queue: &mpsc::Receiver<Vec<u8>>, path: &str) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, out);
    let mut failing = false;
    while let Ok(line) = queue.recv() {
        let mut result = out.write_all(&line);
        std::thread::sleep(BATCH);
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
    /// The client's address as text (the connection's `X-Forwarded-For`
    /// entry, formatted once per connection) and port.
    client_ip: HeaderValue,
    client_port: u16,
    method: Method,
    /// The target as the client sent it (cloning a `Uri` copies no bytes).
    target: http::Uri,
    version: Version,
    host: Option<HeaderValue>,
    user_agent: Option<HeaderValue>,
    referer: Option<HeaderValue>,
    status: u16,
    served: Option<Served>,
    request_id: Option<HeaderValue>,
    bytes: u64,
    complete: bool,
}

impl Pending {
    /// An entry for the request `head` from `client`, taken before the
    /// request path changes the head.
    pub fn start(
        log: &Arc<AccessLog>,
        client_ip: &HeaderValue,
        client: SocketAddr,
        head: &request::Parts,
    ) -> Box<Self> {
        let host = head.headers.get(header::HOST).cloned().or_else(|| {
            head.uri
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        });
        Box::new(Pending {
            log: Arc::clone(log),
            at: SystemTime::now(),
            started: Instant::now(),
            client_ip: client_ip.clone(),
            client_port: client.port(),
            method: head.method.clone(),
            target: head.uri.clone(),
            version: head.version,
            host,
            user_agent: head.headers.get(header::USER_AGENT).cloned(),
            referer: head.headers.get(header::REFERER).cloned(),
            status: 0,
            served: None,
            request_id: None,
            bytes: 0,
            complete: false,
        })
    }

    /// The request target: path and query, or the whole target when it
    /// has none (`*`, authority form).
    fn target(&self) -> std::borrow::Cow<'_, str> {
        match self.target.path_and_query() {
            Some(p) => std::borrow::Cow::Borrowed(p.as_str()),
            None => std::borrow::Cow::Owned(self.target.to_string()),
        }
    }

    /// The answer's status, which backend gave it (if one did), and its
    /// `X-Request-Id`.
    pub fn answered(
        &mut self,
        status: u16,
        served: Option<Served>,
        request_id: Option<HeaderValue>,
    ) {
        self.status = status;
        self.served = served;
        self.request_id = request_id;
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

    /// One JSON object, written field by field (a `serde_json::Value`
    /// built first cost as many instructions as the whole request); numbers
    /// are written without `fmt`.
    fn json(&self, listener: &str, out: &mut Vec<u8>) {
        let served = self.served.as_ref();
        out.extend_from_slice(b"{\"time\":\"");
        rfc3339(self.at, out);
        out.extend_from_slice(b"\",\"listener\":");
        json_str(out, listener.as_bytes());
        out.extend_from_slice(b",\"client\":\"");
        // As a socket address is written: an IPv6 address in brackets.
        let v6 = self.client_ip.as_bytes().contains(&b':');
        if v6 {
            out.push(b'[');
        }
        out.extend_from_slice(self.client_ip.as_bytes());
        if v6 {
            out.push(b']');
        }
        out.push(b':');
        push_u64(out, u64::from(self.client_port));
        out.extend_from_slice(b"\",\"method\":");
        json_str(out, self.method.as_str().as_bytes());
        out.extend_from_slice(b",\"target\":");
        json_str(out, self.target().as_bytes());
        out.extend_from_slice(b",\"protocol\":\"");
        out.extend_from_slice(version(self.version).as_bytes());
        out.extend_from_slice(b"\",\"host\":");
        json_opt(out, self.host.as_ref().map(HeaderValue::as_bytes));
        out.extend_from_slice(b",\"status\":");
        push_u64(out, u64::from(self.status));
        out.extend_from_slice(b",\"bytes\":");
        push_u64(out, self.bytes);
        out.extend_from_slice(b",\"duration_ms\":");
        push_thousandths(out, self.started.elapsed().as_micros());
        out.extend_from_slice(b",\"cluster\":");
        json_opt(out, served.map(|s| s.cluster.as_bytes()));
        out.extend_from_slice(b",\"backend\":");
        json_opt(out, served.map(|s| s.backend.as_bytes()));
        out.extend_from_slice(b",\"attempts\":");
        match served {
            Some(served) => push_u64(out, u64::from(served.attempts)),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"user_agent\":");
        json_opt(out, self.user_agent.as_ref().map(HeaderValue::as_bytes));
        out.extend_from_slice(b",\"referer\":");
        json_opt(out, self.referer.as_ref().map(HeaderValue::as_bytes));
        out.extend_from_slice(b",\"request_id\":");
        json_opt(out, self.request_id.as_ref().map(HeaderValue::as_bytes));
        out.extend_from_slice(if self.complete {
            b",\"complete\":true}"
        } else {
            b",\"complete\":false}"
        });
    }

    /// NGINX's `combined` format (`$remote_addr - - [$time_local]
    /// "$request" $status $body_bytes_sent "$http_referer"
    /// "$http_user_agent"`, time in UTC), then the request time in seconds
    /// and the backend (`-` for none).
    fn combined(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.client_ip.as_bytes());
        out.extend_from_slice(b" - - [");
        clf_time(self.at, out);
        out.extend_from_slice(b"] \"");
        out.extend_from_slice(self.method.as_str().as_bytes());
        out.push(b' ');
        quoted(out, self.target().as_bytes());
        out.push(b' ');
        out.extend_from_slice(version(self.version).as_bytes());
        out.extend_from_slice(b"\" ");
        push_u64(out, u64::from(self.status));
        out.push(b' ');
        push_u64(out, self.bytes);
        out.extend_from_slice(b" \"");
        quoted(out, self.referer.as_ref().map_or(b"-", |v| v.as_bytes()));
        out.extend_from_slice(b"\" \"");
        quoted(out, self.user_agent.as_ref().map_or(b"-", |v| v.as_bytes()));
        out.extend_from_slice(b"\" ");
        push_thousandths(out, self.started.elapsed().as_millis());
        out.push(b' ');
        out.extend_from_slice(self.served.as_ref().map_or(b"-", |s| s.backend.as_bytes()));
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.log.write(self);
    }
}

/// `bytes` as a JSON string: `"` and `\` escaped, control characters as
/// `\u00XX`, and bytes that are not UTF-8 replaced (U+FFFD). Runs of
/// plain ASCII are copied as they are.
fn json_str(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(b'"');
    if bytes
        .iter()
        .all(|&b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
    {
        out.extend_from_slice(bytes);
    } else {
        for c in String::from_utf8_lossy(bytes).chars() {
            match c {
                '"' => out.extend_from_slice(b"\\\""),
                '\\' => out.extend_from_slice(b"\\\\"),
                c if (c as u32) < 0x20 || c == '\u{7f}' => {
                    out.extend_from_slice(format!("\\u{:04x}", c as u32).as_bytes());
                }
                c => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
            }
        }
    }
    out.push(b'"');
}

/// [`json_str`], or `null`.
fn json_opt(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        Some(b) => json_str(out, b),
        None => out.extend_from_slice(b"null"),
    }
}

/// `n` in decimal.
fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// `n` thousandths as a decimal with three places (`1234` → `1.234`).
fn push_thousandths(out: &mut Vec<u8>, n: u128) {
    let n = u64::try_from(n).unwrap_or(u64::MAX);
    push_u64(out, n / 1000);
    out.push(b'.');
    let rest = n % 1000;
    out.extend_from_slice(&[
        b'0' + (rest / 100) as u8,
        b'0' + (rest / 10 % 10) as u8,
        b'0' + (rest % 10) as u8,
    ]);
}

/// `n` as `width` digits, zero-padded.
fn push_padded(out: &mut Vec<u8>, n: u32, width: usize) {
    let mut digits = [b'0'; 10];
    let mut n = n;
    for d in digits[..width].iter_mut().rev() {
        *d = b'0' + (n % 10) as u8;
        n /= 10;
    }
    out.extend_from_slice(&digits[..width]);
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
fn quoted(out: &mut Vec<u8>, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in bytes {
        if (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\' {
            out.push(b);
        } else {
            out.extend_from_slice(&[
                b'\\',
                b'x',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 15)],
            ]);
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
fn rfc3339(t: SystemTime, out: &mut Vec<u8>) {
    let (y, mo, d, h, mi, s, ms) = civil(t);
    push_padded(out, u32::try_from(y).unwrap_or(0), 4);
    out.push(b'-');
    push_padded(out, mo, 2);
    out.push(b'-');
    push_padded(out, d, 2);
    out.push(b'T');
    push_padded(out, h, 2);
    out.push(b':');
    push_padded(out, mi, 2);
    out.push(b':');
    push_padded(out, s, 2);
    out.push(b'.');
    push_padded(out, ms, 3);
    out.push(b'Z');
}

/// `27/Nov/2026:06:57:02 +0000`.
fn clf_time(t: SystemTime, out: &mut Vec<u8>) {
    const MONTHS: [&[u8; 3]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    let (y, mo, d, h, mi, s, _) = civil(t);
    push_padded(out, d, 2);
    out.push(b'/');
    out.extend_from_slice(MONTHS[mo as usize - 1]);
    out.push(b'/');
    push_padded(out, u32::try_from(y).unwrap_or(0), 4);
    out.push(b':');
    push_padded(out, h, 2);
    out.push(b':');
    push_padded(out, mi, 2);
    out.push(b':');
    push_padded(out, s, 2);
    out.extend_from_slice(b" +0000");
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn json_strings_are_escaped_and_stay_valid() {
        let s = text(|o| json_str(o, b"a\"b\\c\td\x01\xffe"));
        let back: String = serde_json::from_str(&s).unwrap();
        assert_eq!(back, "a\"b\\c\td\u{1}\u{fffd}e");
    }

    fn text(write: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut out = Vec::new();
        write(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn times_and_numbers_are_written_without_fmt() {
        let t = UNIX_EPOCH + Duration::from_millis(1_795_762_622_123);
        assert_eq!(text(|o| rfc3339(t, o)), "2026-11-27T06:57:02.123Z");
        assert_eq!(text(|o| clf_time(t, o)), "27/Nov/2026:06:57:02 +0000");
        assert_eq!(text(|o| rfc3339(UNIX_EPOCH, o)), "1970-01-01T00:00:00.000Z");
        // A leap day.
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(text(|o| rfc3339(leap, o)), "2000-02-29T00:00:00.000Z");
        assert_eq!(text(|o| push_u64(o, 0)), "0");
        assert_eq!(text(|o| push_u64(o, u64::MAX)), u64::MAX.to_string());
        assert_eq!(text(|o| push_thousandths(o, 1234)), "1.234");
        assert_eq!(text(|o| push_thousandths(o, 5)), "0.005");
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
        let mut entry = Pending::start(
            &log,
            &HeaderValue::from_static("10.0.0.1"),
            "10.0.0.1:5555".parse().unwrap(),
            &head,
        );
        entry.answered(
            200,
            Some(Served {
                cluster: Arc::from("app"),
                backend: Arc::from("127.0.0.1:9001"),
                attempts: 2,
            }),
            Some(HeaderValue::from_static("abc")),
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
        assert_eq!(v["request_id"], "abc");
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
        let v6 = Pending::start(
            &log,
            &HeaderValue::from_static("::1"),
            "[::1]:5555".parse().unwrap(),
            &head,
        );
        let mut json = Vec::new();
        v6.json("web", &mut json);
        let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(v["client"], "[::1]:5555");
    }
}
