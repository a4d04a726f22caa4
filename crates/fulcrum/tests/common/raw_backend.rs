//! A scripted raw-TCP HTTP/1.1 backend: it answers with bytes the test
//! chooses, in the TCP writes the test chooses, and closes when the test
//! says. It records each request it reads, per connection, so a test can
//! tell a pooled connection from a new one and see exactly what the proxy
//! sent. The byte-reading helpers serve raw test clients too.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::{cluster_block, simple_config, Proxy};

/// Longest a test waits for any one exchange, read or accept: far above
/// what a loopback exchange takes, so it only catches hangs.
pub const PATIENCE: Duration = Duration::from_secs(5);

/// Pause between the TCP writes of a response sent in pieces: long enough
/// that the proxy reads each piece on its own.
pub const PIECE_GAP: Duration = Duration::from_millis(5);

/// A `200 OK` with a short body and a length, the answer of a backend
/// that keeps its connection open.
pub const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

/// A proxy whose one cluster is `backend` alone, without retries. Its
/// response timeout is below [`PATIENCE`], so a proxy waiting for a head
/// that never comes answers 504 before the test gives up.
pub fn proxy_for(backend: &RawBackend) -> Proxy {
    let cluster = cluster_block("app", "round-robin", &[(backend.addr, 1)]);
    Proxy::run(&simple_config(&format!(
        "{cluster}retries = 0\nresponse_timeout = \"3s\"\n"
    )))
}

/// One request as the backend read it.
#[derive(Clone, Debug)]
pub struct Received {
    /// The request line, e.g. `GET /a?b=1 HTTP/1.1`.
    pub line: String,
    /// The header fields in the order and case they arrived.
    pub headers: Vec<(String, String)>,
    /// The body, read as its framing says (chunked bodies de-chunked).
    pub body: Vec<u8>,
}

impl Received {
    /// The values of header `name` (any case), in order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The value of header `name`, if it came exactly once.
    pub fn header(&self, name: &str) -> Option<&str> {
        match self.header_all(name).as_slice() {
            [one] => Some(one),
            _ => None,
        }
    }
}

/// One part of a scripted answer.
enum Step {
    /// Bytes written in one `write_all`.
    Write(Vec<u8>),
    /// A pause before the next step.
    Pause(Duration),
}

/// What the backend does with the connection once an answer is written.
#[derive(Clone, Copy, Debug)]
pub enum After {
    /// Reads the next request.
    KeepOpen,
    /// Closes at once (the end of a close-delimited body, or a crash).
    Close,
    /// Leaves the connection idle for a while, then closes it without
    /// reading (a server's keep-alive timeout).
    IdleThenClose(Duration),
    /// Sends back every byte it reads from then on, the bytes already
    /// read after the request included (a tunnel after `101`), until
    /// the proxy closes.
    Echo,
}

/// The backend's answer to one request.
pub struct Reply {
    steps: Vec<Step>,
    after: After,
}

impl Reply {
    /// `bytes` in one write; the connection stays open.
    pub fn keep_open(bytes: &[u8]) -> Reply {
        Reply::pieces(&[bytes], After::KeepOpen)
    }

    /// `bytes` in one write, then the connection is closed.
    pub fn then_close(bytes: &[u8]) -> Reply {
        Reply::pieces(&[bytes], After::Close)
    }

    /// Each piece in its own write, [`PIECE_GAP`] apart, then `after`.
    pub fn pieces(pieces: &[&[u8]], after: After) -> Reply {
        let mut steps = Vec::new();
        for (i, piece) in pieces.iter().enumerate() {
            if i > 0 {
                steps.push(Step::Pause(PIECE_GAP));
            }
            steps.push(Step::Write(piece.to_vec()));
        }
        Reply { steps, after }
    }
}

/// What a [`RawBackend`] has read so far.
#[derive(Default)]
struct Log {
    /// Every request, in arrival order.
    requests: Vec<Received>,
    /// Per accepted connection, in accept order, its request lines.
    connections: Vec<Vec<String>>,
    /// Connections that have ended, closed by either side.
    ended: usize,
}

/// The function that answers the `n`th request (from 0, counted over all
/// connections).
type Script = dyn Fn(&Received, usize) -> Reply + Send + Sync;

/// A backend on 127.0.0.1:0 that reads HTTP/1.1 requests and answers each
/// with the [`Reply`] its script returns. Stops when dropped.
pub struct RawBackend {
    pub addr: SocketAddr,
    log: Arc<Mutex<Log>>,
    task: tokio::task::JoinHandle<()>,
}

impl RawBackend {
    pub async fn start(script: impl Fn(&Received, usize) -> Reply + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let log = Arc::new(Mutex::new(Log::default()));
        let script: Arc<Script> = Arc::new(script);
        let task = tokio::spawn({
            let log = Arc::clone(&log);
            async move {
                // Dropped with this task, which aborts every connection's.
                let mut connections = tokio::task::JoinSet::new();
                while let Ok((stream, _)) = listener.accept().await {
                    let index = {
                        let mut log = log.lock().unwrap();
                        log.connections.push(Vec::new());
                        log.connections.len() - 1
                    };
                    let (log, script) = (Arc::clone(&log), Arc::clone(&script));
                    connections.spawn(async move {
                        serve(stream, index, Arc::clone(&log), script).await;
                        log.lock().unwrap().ended += 1;
                    });
                }
            }
        });
        RawBackend { addr, log, task }
    }

    /// Per connection, the request lines it carried.
    pub fn connections(&self) -> Vec<Vec<String>> {
        self.log.lock().unwrap().connections.clone()
    }

    /// Every request read, in order.
    pub fn requests(&self) -> Vec<Received> {
        self.log.lock().unwrap().requests.clone()
    }

    /// How many connections have ended, closed by either side.
    pub fn ended(&self) -> usize {
        self.log.lock().unwrap().ended
    }
}

impl Drop for RawBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves one connection: request, scripted reply, until the script or
/// the proxy closes it.
async fn serve(mut stream: TcpStream, index: usize, log: Arc<Mutex<Log>>, script: Arc<Script>) {
    let mut buf = Vec::new();
    while let Some(request) = read_request(&mut stream, &mut buf).await {
        let n = {
            let mut log = log.lock().unwrap();
            log.connections[index].push(request.line.clone());
            log.requests.push(request.clone());
            log.requests.len() - 1
        };
        let reply = script(&request, n);
        for step in reply.steps {
            match step {
                Step::Write(bytes) => {
                    if stream.write_all(&bytes).await.is_err() {
                        return;
                    }
                }
                Step::Pause(d) => tokio::time::sleep(d).await,
            }
        }
        match reply.after {
            After::KeepOpen => {}
            After::Close => {
                let _ = stream.shutdown().await;
                return;
            }
            After::IdleThenClose(d) => {
                tokio::time::sleep(d).await;
                let _ = stream.shutdown().await;
                return;
            }
            After::Echo => {
                echo(&mut stream, buf).await;
                return;
            }
        }
    }
}

/// Writes `pending`, then every byte read, back on `stream` until it ends.
async fn echo(stream: &mut TcpStream, mut pending: Vec<u8>) {
    loop {
        if stream.write_all(&pending).await.is_err() {
            return;
        }
        pending.clear();
        if read_more(stream, &mut pending).await.is_none() {
            return;
        }
    }
}

/// A head's first line and its fields (names as sent, values trimmed).
pub fn split_head(head: &str) -> (String, Vec<(String, String)>) {
    let mut lines = head.trim_end_matches("\r\n").split("\r\n");
    let first = lines.next().unwrap_or_default().to_owned();
    let fields = lines
        .map(|l| {
            let (name, value) = l.split_once(':').expect("a header line has a colon");
            (name.to_owned(), value.trim().to_owned())
        })
        .collect();
    (first, fields)
}

/// Reads one request (head, then the body its framing announces); `None`
/// when the connection ends or stays silent for [`PATIENCE`].
async fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Received> {
    let head = read_through(stream, buf, b"\r\n\r\n").await?;
    let head = String::from_utf8(head).expect("request heads here are ASCII");
    let (line, headers) = split_head(&head);
    let mut request = Received {
        line,
        headers,
        body: Vec::new(),
    };
    let chunked = request
        .header("transfer-encoding")
        .is_some_and(|te| te.eq_ignore_ascii_case("chunked"));
    if chunked {
        request.body = read_chunked(stream, buf).await?;
    } else if let Some(length) = request.header("content-length") {
        let length: usize = length.parse().expect("a numeric Content-Length");
        request.body = read_exact(stream, buf, length).await?;
    }
    Some(request)
}

/// A chunked body, de-chunked; trailer fields are read and dropped.
pub async fn read_chunked(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let size_line = read_through(stream, buf, b"\r\n").await?;
        let size_line = String::from_utf8(size_line).ok()?;
        let size = size_line.trim_end().split(';').next()?.trim();
        let size = usize::from_str_radix(size, 16).expect("a hex chunk size");
        if size == 0 {
            // Trailer fields, up to the empty line.
            while read_through(stream, buf, b"\r\n").await? != b"\r\n" {}
            return Some(body);
        }
        body.extend(read_exact(stream, buf, size).await?);
        assert_eq!(
            read_exact(stream, buf, 2).await?,
            b"\r\n",
            "chunk data ends with CRLF"
        );
    }
}

/// The bytes up to and including `end`, reading as needed.
pub async fn read_through(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    end: &[u8],
) -> Option<Vec<u8>> {
    loop {
        if let Some(at) = buf.windows(end.len()).position(|w| w == end) {
            return Some(buf.drain(..at + end.len()).collect());
        }
        read_more(stream, buf).await?;
    }
}

/// The next `n` bytes, reading as needed.
pub async fn read_exact(stream: &mut TcpStream, buf: &mut Vec<u8>, n: usize) -> Option<Vec<u8>> {
    while buf.len() < n {
        read_more(stream, buf).await?;
    }
    Some(buf.drain(..n).collect())
}

/// Appends what the socket has; `None` at its end, on an error or after
/// [`PATIENCE`] of silence.
pub async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<()> {
    let mut chunk = [0u8; 16 * 1024];
    match tokio::time::timeout(PATIENCE, stream.read(&mut chunk)).await {
        Ok(Ok(n)) if n > 0 => {
            buf.extend_from_slice(&chunk[..n]);
            Some(())
        }
        _ => None,
    }
}
