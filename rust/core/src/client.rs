//! Blocking Modbus TCP client over `std::net`, built for a control loop: every request has a
//! deadline and never blocks past it, replies to requests that already timed out are skipped by
//! transaction id, and any transport error closes the socket and reconnects with back-off.
//!
//! While backing off, requests fail at once instead of blocking, so the loop keeps its period even
//! with the PCS unreachable. Host names are resolved on a helper thread (`Resolver`): the system
//! resolver blocks for as long as it likes (5-30 s with a dead DNS server), and the control thread
//! must not; until an answer is there, requests fail at once with `Resolving`.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::modbus::{
    decode_read_response, decode_write_response, encode_read_request, encode_write_request,
    is_older_transaction, parse_frame, ExceptionCode, FrameError, ResponseError,
};

const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Which side failed: the transport, the framing, or the device (a Modbus exception).
#[derive(Debug)]
pub enum ClientError {
    /// Waiting before the next connection attempt after a failure.
    BackingOff,
    /// The host name is being resolved off the control thread.
    Resolving,
    /// The deadline passed before a complete answer arrived.
    Timeout,
    /// Resolving, connecting, reading or writing failed, or the peer closed the connection.
    Io(io::Error),
    /// The bytes that came back are not a valid answer to our request.
    Malformed(FrameError),
    /// The device answered with a Modbus exception.
    Device { function: u8, code: ExceptionCode },
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BackingOff => write!(f, "waiting to reconnect"),
            Self::Resolving => write!(f, "resolving the host name"),
            Self::Timeout => write!(f, "no answer before the deadline"),
            Self::Io(e) => write!(f, "transport: {e}"),
            Self::Malformed(e) => write!(f, "malformed answer: {e}"),
            Self::Device { function, code } => write!(f, "device {code} on function {function}"),
        }
    }
}

impl std::error::Error for ClientError {}

impl From<ResponseError> for ClientError {
    fn from(e: ResponseError) -> Self {
        match e {
            ResponseError::Exception { function, code } => Self::Device { function, code },
            ResponseError::Malformed(f) => Self::Malformed(f),
        }
    }
}

/// Counters for the operator (exposed in the snapshot).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClientStats {
    pub requests: u64,
    pub errors: u64,
    pub connects: u64,
    pub stale_replies: u64,
}

/// A name lookup: `(host, port)` -> addresses. The default is the system resolver.
pub type ResolveFn = Arc<dyn Fn(&str, u16) -> io::Result<Vec<SocketAddr>> + Send + Sync>;

/// Runs one lookup at a time on a helper thread and hands back its answer when it is there.
pub struct Resolver {
    resolve: ResolveFn,
    pending: Option<Receiver<io::Result<Vec<SocketAddr>>>>,
}

impl Resolver {
    pub fn system() -> Self {
        Self::new(Arc::new(|host, port| {
            (host, port).to_socket_addrs().map(Iterator::collect)
        }))
    }

    pub fn new(resolve: ResolveFn) -> Self {
        Self {
            resolve,
            pending: None,
        }
    }

    /// The answer, if one is there; otherwise starts a lookup (if none runs) and returns `None`.
    pub fn poll(&mut self, host: &str, port: u16) -> Option<io::Result<Vec<SocketAddr>>> {
        if let Some(rx) = &self.pending {
            return match rx.try_recv() {
                Ok(answer) => {
                    self.pending = None;
                    Some(answer)
                }
                Err(TryRecvError::Empty) => None,
                Err(TryRecvError::Disconnected) => {
                    self.pending = None;
                    Some(Err(io::Error::other(
                        "the resolver thread ended without an answer",
                    )))
                }
            };
        }
        let (tx, rx) = mpsc::channel();
        let (resolve, host) = (Arc::clone(&self.resolve), host.to_string());
        let spawned = thread::Builder::new()
            .name("bess-resolve".into())
            .spawn(move || {
                let _ = tx.send(resolve(&host, port));
            });
        match spawned {
            Ok(_) => {
                self.pending = Some(rx);
                None
            }
            Err(e) => Some(Err(e)),
        }
    }
}

pub struct Client {
    host: String,
    port: u16,
    unit_id: u8,
    resolver: Resolver,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
    transaction_id: u16,
    backoff: Duration,
    retry_at: Option<Instant>,
    stats: ClientStats,
}

impl Client {
    pub fn new(host: impl Into<String>, port: u16, unit_id: u8) -> Self {
        Self::with_resolver(host, port, unit_id, Resolver::system())
    }

    pub fn with_resolver(
        host: impl Into<String>,
        port: u16,
        unit_id: u8,
        resolver: Resolver,
    ) -> Self {
        Self {
            host: host.into(),
            port,
            unit_id,
            resolver,
            stream: None,
            buf: Vec::with_capacity(512),
            transaction_id: 0,
            backoff: BACKOFF_MIN,
            retry_at: None,
            stats: ClientStats::default(),
        }
    }

    pub fn stats(&self) -> ClientStats {
        self.stats
    }

    pub fn is_connected(&self) -> bool {
        self.stream.is_some()
    }

    /// Allows a connection attempt now even while backing off (for the best-effort final write).
    pub fn skip_backoff(&mut self) {
        self.retry_at = None;
    }

    pub fn close(&mut self) {
        self.stream = None;
        self.buf.clear();
    }

    /// FC3: `count` holding registers from `address`.
    pub fn read_holding(
        &mut self,
        address: u16,
        count: u16,
        deadline: Instant,
    ) -> Result<Vec<u16>, ClientError> {
        let unit = self.unit_id;
        let pdu = self.transact(deadline, |tid| {
            encode_read_request(tid, unit, address, count)
        })?;
        let regs = decode_read_response(&pdu, count);
        self.settle(regs)
    }

    /// FC16: `values` from `address`.
    pub fn write_multiple(
        &mut self,
        address: u16,
        values: &[u16],
        deadline: Instant,
    ) -> Result<(), ClientError> {
        let unit = self.unit_id;
        let pdu = self.transact(deadline, |tid| {
            encode_write_request(tid, unit, address, values)
        })?;
        // FC16 counts are at most 123, checked by the encoder above.
        let r = decode_write_response(&pdu, address, values.len() as u16);
        self.settle(r)
    }

    /// A device exception keeps the connection (the stream is in step); a malformed answer does not.
    fn settle<T>(&mut self, r: Result<T, ResponseError>) -> Result<T, ClientError> {
        match r {
            Ok(v) => {
                self.backoff = BACKOFF_MIN;
                Ok(v)
            }
            Err(e @ ResponseError::Exception { .. }) => {
                self.stats.errors += 1;
                Err(e.into())
            }
            Err(e) => Err(self.fail(e.into())),
        }
    }

    /// Closes the connection, schedules the next attempt, and passes the error on.
    fn fail(&mut self, e: ClientError) -> ClientError {
        self.stats.errors += 1;
        self.close();
        self.retry_at = Some(Instant::now() + self.backoff);
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
        e
    }

    fn connect(&mut self, deadline: Instant) -> Result<(), ClientError> {
        if let Some(at) = self.retry_at {
            if Instant::now() < at {
                return Err(ClientError::BackingOff);
            }
        }
        let addrs: Vec<SocketAddr> = if let Ok(ip) = self.host.parse::<IpAddr>() {
            vec![SocketAddr::new(ip, self.port)]
        } else {
            match self.resolver.poll(&self.host, self.port) {
                None => return Err(ClientError::Resolving),
                Some(Ok(a)) => a,
                Some(Err(e)) => {
                    self.retry_at = None;
                    return Err(self.fail(ClientError::Io(e)));
                }
            }
        };
        self.retry_at = None;
        let mut last = io::Error::new(io::ErrorKind::NotFound, "host resolves to no address");
        for addr in addrs {
            let Some(left) = deadline
                .checked_duration_since(Instant::now())
                .filter(|d| !d.is_zero())
            else {
                return Err(self.fail(ClientError::Timeout));
            };
            match TcpStream::connect_timeout(&addr, left) {
                Ok(s) => {
                    // Small requests must leave at once, not wait for Nagle.
                    if let Err(e) = s.set_nodelay(true) {
                        return Err(self.fail(ClientError::Io(e)));
                    }
                    self.stats.connects += 1;
                    self.stream = Some(s);
                    self.buf.clear();
                    return Ok(());
                }
                Err(e) => last = e,
            }
        }
        Err(self.fail(ClientError::Io(last)))
    }

    /// Sends one request and returns the PDU of the reply with the same transaction id.
    fn transact<F>(&mut self, deadline: Instant, build: F) -> Result<Vec<u8>, ClientError>
    where
        F: FnOnce(u16) -> Result<Vec<u8>, FrameError>,
    {
        if self.stream.is_none() {
            self.connect(deadline)?;
        }
        self.transaction_id = self.transaction_id.wrapping_add(1);
        let tid = self.transaction_id;
        let adu = build(tid).map_err(ClientError::Malformed)?;
        self.stats.requests += 1;
        if let Err(e) = self.send(&adu, deadline) {
            return Err(self.fail(e));
        }
        match self.receive(tid, deadline) {
            Ok(pdu) => Ok(pdu),
            Err(e) => Err(self.fail(e)),
        }
    }

    fn send(&mut self, adu: &[u8], deadline: Instant) -> Result<(), ClientError> {
        let left = time_left(deadline)?;
        let Some(stream) = self.stream.as_mut() else {
            return Err(ClientError::Io(io::ErrorKind::NotConnected.into()));
        };
        stream
            .set_write_timeout(Some(left))
            .map_err(ClientError::Io)?;
        // One write_all per request: the whole ADU in one segment.
        stream.write_all(adu).map_err(io_or_timeout)
    }

    fn receive(&mut self, tid: u16, deadline: Instant) -> Result<Vec<u8>, ClientError> {
        let mut chunk = [0u8; 512];
        loop {
            while let Some((frame, used)) =
                parse_frame(&self.buf).map_err(ClientError::Malformed)?
            {
                if frame.transaction_id == tid {
                    if frame.unit_id != self.unit_id {
                        return Err(ClientError::Malformed(FrameError::UnitMismatch {
                            expected: self.unit_id,
                            got: frame.unit_id,
                        }));
                    }
                    let pdu = frame.pdu.to_vec();
                    self.buf.drain(..used);
                    return Ok(pdu);
                }
                if !is_older_transaction(frame.transaction_id, tid) {
                    return Err(ClientError::Malformed(FrameError::BadRequest(
                        "reply to a transaction that was never sent",
                    )));
                }
                // A late answer to a request that already timed out.
                self.stats.stale_replies += 1;
                self.buf.drain(..used);
            }
            let left = time_left(deadline)?;
            let Some(stream) = self.stream.as_mut() else {
                return Err(ClientError::Io(io::ErrorKind::NotConnected.into()));
            };
            stream
                .set_read_timeout(Some(left))
                .map_err(ClientError::Io)?;
            match stream.read(&mut chunk) {
                Ok(0) => return Err(ClientError::Io(io::ErrorKind::UnexpectedEof.into())),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_or_timeout(e)),
            }
        }
    }
}

/// The time left to `deadline`, or `Timeout` (a zero timeout means "block forever" to std).
fn time_left(deadline: Instant) -> Result<Duration, ClientError> {
    deadline
        .checked_duration_since(Instant::now())
        .filter(|d| !d.is_zero())
        .ok_or(ClientError::Timeout)
}

fn io_or_timeout(e: io::Error) -> ClientError {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => ClientError::Timeout,
        _ => ClientError::Io(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modbus::{encode_exception, encode_read_response, encode_write_response};
    use std::net::TcpListener;
    use std::thread;

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(2)
    }

    /// A server that answers one connection with the replies `script` makes for each request.
    fn serve<F>(script: F) -> (u16, thread::JoinHandle<()>)
    where
        F: FnOnce(&mut TcpStream) + Send + 'static,
    {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let h = thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            script(&mut s);
        });
        (port, h)
    }

    fn read_request(s: &mut TcpStream) -> (u16, Vec<u8>) {
        let mut head = [0u8; 7];
        s.read_exact(&mut head).unwrap();
        let len = usize::from(u16::from_be_bytes([head[4], head[5]])) - 1;
        let mut pdu = vec![0u8; len];
        s.read_exact(&mut pdu).unwrap();
        (u16::from_be_bytes([head[0], head[1]]), pdu)
    }

    #[test]
    fn reads_and_writes() {
        let (port, h) = serve(|s| {
            let (tid, _) = read_request(s);
            s.write_all(&encode_read_response(tid, 1, &[1, 2, 3]))
                .unwrap();
            let (tid, _) = read_request(s);
            s.write_all(&encode_write_response(tid, 1, 0, 5)).unwrap();
        });
        let mut c = Client::new("127.0.0.1", port, 1);
        assert_eq!(c.read_holding(100, 3, soon()).unwrap(), vec![1, 2, 3]);
        c.write_multiple(0, &[0; 5], soon()).unwrap();
        h.join().unwrap();
        assert_eq!(c.stats().requests, 2);
    }

    #[test]
    fn skips_stale_replies() {
        let (port, h) = serve(|s| {
            let (tid, _) = read_request(s);
            // An answer to an older request first, split across writes.
            let stale = encode_read_response(tid.wrapping_sub(1), 1, &[9]);
            s.write_all(&stale[..4]).unwrap();
            s.flush().unwrap();
            s.write_all(&stale[4..]).unwrap();
            s.write_all(&encode_read_response(tid, 1, &[7])).unwrap();
        });
        let mut c = Client::new("127.0.0.1", port, 1);
        assert_eq!(c.read_holding(100, 1, soon()).unwrap(), vec![7]);
        assert_eq!(c.stats().stale_replies, 1);
        h.join().unwrap();
    }

    #[test]
    fn exception_keeps_connection_malformed_closes() {
        let (port, h) = serve(|s| {
            let (tid, _) = read_request(s);
            s.write_all(&encode_exception(tid, 1, 3, 2)).unwrap();
            let (tid, _) = read_request(s);
            // byte count 0 for a 1-register read
            s.write_all(&[(tid >> 8) as u8, tid as u8, 0, 0, 0, 3, 1, 3, 0])
                .unwrap();
        });
        let mut c = Client::new("127.0.0.1", port, 1);
        match c.read_holding(100, 1, soon()) {
            Err(ClientError::Device { function: 3, code }) => assert_eq!(code, ExceptionCode(2)),
            other => panic!("expected a device exception, got {other:?}"),
        }
        assert!(c.is_connected());
        assert!(matches!(
            c.read_holding(100, 1, soon()),
            Err(ClientError::Malformed(_))
        ));
        assert!(!c.is_connected());
        h.join().unwrap();
    }

    #[test]
    fn times_out_at_the_deadline_then_backs_off() {
        let (port, h) = serve(|s| {
            let _ = read_request(s);
            // Hold the connection open without answering until the client gives up.
            let mut b = [0u8; 1];
            let _ = s.read(&mut b);
        });
        let mut c = Client::new("127.0.0.1", port, 1);
        let t = Instant::now();
        let r = c.read_holding(100, 1, Instant::now() + Duration::from_millis(80));
        assert!(matches!(r, Err(ClientError::Timeout)), "{r:?}");
        let waited = t.elapsed();
        assert!(
            waited >= Duration::from_millis(75) && waited < Duration::from_millis(1000),
            "{waited:?}"
        );
        assert!(!c.is_connected());
        let t = Instant::now();
        assert!(matches!(
            c.read_holding(100, 1, soon()),
            Err(ClientError::BackingOff)
        ));
        assert!(
            t.elapsed() < Duration::from_millis(20),
            "backing off must not block"
        );
        h.join().unwrap();
    }

    #[test]
    fn refused_connection_is_an_io_error() {
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let mut c = Client::new("127.0.0.1", port, 1);
        assert!(matches!(
            c.read_holding(100, 1, soon()),
            Err(ClientError::Io(_))
        ));
    }

    #[test]
    fn a_hanging_resolver_does_not_block_requests() {
        // The resolver answers only when the test says so (or after 10 s, and then the test
        // fails): if the client waited for it, the first request could not return first.
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let release_rx = std::sync::Mutex::new(release_rx);
        let timed_out = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let t = Arc::clone(&timed_out);
        let resolver = Resolver::new(Arc::new(move |_host: &str, port| {
            if release_rx
                .lock()
                .unwrap()
                .recv_timeout(Duration::from_secs(10))
                .is_err()
            {
                t.store(true, std::sync::atomic::Ordering::SeqCst);
            }
            Ok(vec![SocketAddr::from(([127, 0, 0, 1], port))])
        }));
        let mut c = Client::with_resolver("pcs.invalid", port, 1, resolver);
        assert!(matches!(
            c.read_holding(0, 1, soon()),
            Err(ClientError::Resolving)
        ));
        assert!(matches!(
            c.read_holding(0, 1, soon()),
            Err(ClientError::Resolving)
        ));
        assert!(!timed_out.load(std::sync::atomic::Ordering::SeqCst));
        release_tx.send(()).unwrap();
        let server = thread::spawn(move || l.accept().map(|_| ()));
        let mut connected = false;
        for _ in 0..1000 {
            match c.read_holding(0, 1, Instant::now() + Duration::from_millis(50)) {
                Err(ClientError::Resolving) => thread::sleep(Duration::from_millis(5)),
                _ => {
                    connected = c.stats().connects == 1;
                    break;
                }
            }
        }
        assert!(connected, "connected once the name resolved");
        server.join().unwrap().unwrap();
        assert!(!timed_out.load(std::sync::atomic::Ordering::SeqCst));
    }
}
