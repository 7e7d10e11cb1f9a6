//! The HTTP accept loop, plain or TLS, with the limits a public endpoint needs.
//!
//! axum's own `serve` has no timeouts and no connection limit, so one client could hold the
//! node's file descriptors with idle or slowly written connections until `/health` and the
//! node's own checks failed. This loop bounds that:
//! - at most `server.max_connections` connections are served. A connection arriving past it
//!   takes the place of one with no request in flight (idle, or still sending its headers),
//!   which is closed: a flood of idle connections cannot keep a probe or a client out. When
//!   every connection has a request in flight, [`RESERVED_CONNECTIONS`] more are accepted that
//!   answer only `/health`, `/ready` and `/metrics`, and any beyond those are closed at once;
//! - a connection with no request in flight is closed once it has been silent for
//!   `server.idle_timeout`, or once it has taken `server.header_read_timeout` to send a
//!   request's headers (a TLS handshake gets the same time);
//! - request bodies are bounded in time by the handlers (`server.body_read_timeout`).
//!
//! Every connection task lives in a `JoinSet` owned by the loop; on stop, each connection is
//! told to finish its in-flight requests and the loop waits for them.

use std::convert::Infallible;
use std::io;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, Request, header};
use axum::response::Response;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnectionBuilder;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use tracing::{debug, info, warn};

use crate::config::{RESERVED_CONNECTIONS, ServerSettings};
use crate::metrics as m;

/// File descriptors kept for everything but client connections: WAL segments, Parquet files
/// DuckDB opens, object-store and cluster sockets.
const FD_HEADROOM: usize = 1024;

/// The routes a connection past `server.max_connections` may use.
const PROBE_PATHS: [&str; 3] = ["/health", "/ready", "/metrics"];

/// The limits the accept loop enforces (from `[server]`, with the connection limit fitted to
/// the file-descriptor limit).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections served in full.
    pub max_connections: usize,
    /// See `server.header_read_timeout`.
    pub header_read_timeout: Duration,
    /// See `server.idle_timeout`.
    pub idle_timeout: Duration,
}

impl Limits {
    /// The limits of `settings`, after raising the process's soft file-descriptor limit to its
    /// hard limit and lowering `max_connections` to what that leaves room for.
    pub fn from_settings(settings: &ServerSettings) -> Self {
        let descriptors = raise_fd_limit();
        let max_connections = fit_to_descriptors(settings.max_connections, descriptors);
        if max_connections < settings.max_connections {
            warn!(
                configured = settings.max_connections,
                effective = max_connections,
                fd_limit = descriptors,
                "server.max_connections lowered to fit the file-descriptor limit (raise LimitNOFILE)"
            );
        }
        Self {
            max_connections,
            header_read_timeout: settings.header_read_timeout.0,
            idle_timeout: settings.idle_timeout.0,
        }
    }
}

/// The connections `fd_limit` descriptors can hold, keeping [`FD_HEADROOM`] for the node itself
/// and room for the reserved probe connections; never below a handful, so a tiny limit still
/// serves something.
fn fit_to_descriptors(configured: usize, fd_limit: usize) -> usize {
    let room = fd_limit.saturating_sub(FD_HEADROOM + RESERVED_CONNECTIONS);
    configured.min(room.max(16))
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (as Go's runtime and most servers do) and
/// returns the soft limit in effect.
fn raise_fd_limit() -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own; setrlimit only reads it.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit.rlim_cur = limit.rlim_max;
            }
        }
    }
    usize::try_from(limit.rlim_cur).unwrap_or(usize::MAX)
}

/// Serves `app` on `listener` (over TLS when `tls` is set) until `stop` is cancelled, then lets
/// every open connection finish its in-flight requests.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    app: Router,
    limits: Limits,
    stop: CancellationToken,
) -> io::Result<()> {
    let open = Arc::new(AtomicUsize::new(0));
    let registry = Arc::new(Registry::default());
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
            // Reap finished connections so the set does not grow without bound.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let (tcp, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Running out of file descriptors is transient; keep accepting.
                warn!(%error, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Answers go out as soon as they are written: with Nagle's algorithm a response split
        // over two writes waits for the client's delayed ACK (tens of milliseconds).
        if let Err(error) = tcp.set_nodelay(true) {
            debug!(%peer, %error, "setting TCP_NODELAY failed");
        }
        let count = open.load(Ordering::Relaxed);
        let mut probes_only = false;
        if count >= limits.max_connections && !registry.evict_one_idle() {
            if count >= limits.max_connections + RESERVED_CONNECTIONS {
                m::record_connection_refused();
                debug!(%peer, open = count, "connection refused: server.max_connections reached");
                drop(tcp);
                continue;
            }
            probes_only = true;
        }
        let counted = OpenConnection::new(open.clone());
        let (id, activity, evicted) = registry.add();
        let registered = Registered {
            registry: registry.clone(),
            id,
        };
        let app = app.clone();
        let tls = tls.clone();
        let stop = stop.clone();
        connections.spawn(async move {
            let _counted = counted;
            let _registered = registered;
            let connection = Connection {
                activity,
                probes_only,
                limits,
                peer,
            };
            tokio::select! {
                () = serve_connection(tcp, tls, app, &connection, stop) => {}
                () = evicted.cancelled() => {
                    m::record_connection_timeout("evicted");
                    debug!(%peer, "idle connection closed to make room for a new one");
                }
            }
        });
    }
    info!(
        connections = connections.len(),
        "http api stopped accepting; draining connections"
    );
    while connections.join_next().await.is_some() {}
    Ok(())
}

/// The open connections' activity, so that an idle one can be closed to make room.
#[derive(Default)]
struct Registry {
    inner: std::sync::Mutex<RegistryInner>,
}

#[derive(Default)]
struct RegistryInner {
    next_id: u64,
    open: std::collections::HashMap<u64, (Arc<Activity>, CancellationToken)>,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, RegistryInner> {
        // Every mutation is one insert or remove: a panic cannot leave it half-done.
        self.inner
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    fn add(&self) -> (u64, Arc<Activity>, CancellationToken) {
        let mut inner = self.lock();
        let id = inner.next_id;
        inner.next_id += 1;
        let activity = Arc::new(Activity::new());
        let evict = CancellationToken::new();
        inner.open.insert(id, (activity.clone(), evict.clone()));
        (id, activity, evict)
    }

    /// Closes one connection with no request in flight (and not already being closed);
    /// returns whether there was one. A connection that never sent a byte goes before one that
    /// is sending a request, and the longest idle first: a client that has just connected
    /// (its request not read yet) is the last to go.
    fn evict_one_idle(&self) -> bool {
        let mut inner = self.lock();
        let idle = inner
            .open
            .iter()
            .filter(|(_, (activity, evict))| activity.is_idle() && !evict.is_cancelled())
            .min_by_key(|(_, (activity, _))| (activity.is_reading(), activity.idle_since()))
            .map(|(id, _)| *id);
        match idle.and_then(|id| inner.open.remove(&id)) {
            Some((_, evict)) => {
                evict.cancel();
                true
            }
            None => false,
        }
    }
}

/// Removes a connection from the [`Registry`] when its task ends.
struct Registered {
    registry: Arc<Registry>,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.registry.lock().open.remove(&self.id);
    }
}

/// What one connection's task knows about itself.
struct Connection {
    activity: Arc<Activity>,
    /// Accepted past the limit: only the probe routes are served.
    probes_only: bool,
    limits: Limits,
    peer: std::net::SocketAddr,
}

/// Counts an open connection for as long as it lives.
struct OpenConnection(Arc<AtomicUsize>);

impl OpenConnection {
    fn new(open: Arc<AtomicUsize>) -> Self {
        let now = open.fetch_add(1, Ordering::Relaxed) + 1;
        m::set_connections(now);
        Self(open)
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        let now = self.0.fetch_sub(1, Ordering::Relaxed) - 1;
        m::set_connections(now);
    }
}

async fn serve_connection(
    tcp: TcpStream,
    tls: Option<TlsAcceptor>,
    app: Router,
    connection: &Connection,
    stop: CancellationToken,
) {
    let io = Watched::new(tcp, connection.activity.clone());
    match tls {
        None => drive(io, app, connection, stop).await,
        Some(acceptor) => {
            let handshake =
                tokio::time::timeout(connection.limits.header_read_timeout, acceptor.accept(io));
            let stream = tokio::select! {
                handshake = handshake => match handshake {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(error)) => {
                        debug!(peer = %connection.peer, %error, "tls handshake failed");
                        return;
                    }
                    Err(_) => {
                        m::record_connection_timeout("tls_handshake_timeout");
                        debug!(peer = %connection.peer, "tls handshake timed out");
                        return;
                    }
                },
                _ = stop.cancelled() => return,
            };
            drive(stream, app, connection, stop).await;
        }
    }
}

/// Serves HTTP on one connection, closing it when [`Activity::expired`] says so.
async fn drive<S>(io: S, app: Router, connection: &Connection, stop: CancellationToken)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let probes_only = connection.probes_only;
    let service = {
        let activity = connection.activity.clone();
        tower::service_fn(move |request: Request<Incoming>| {
            let app = app.clone();
            let activity = activity.clone();
            async move {
                let _request = activity.request_started();
                if probes_only && !PROBE_PATHS.contains(&request.uri().path()) {
                    return Ok::<_, Infallible>(over_limit());
                }
                app.oneshot(request.map(Body::new)).await
            }
        })
    };
    let builder = ConnectionBuilder::new(TokioExecutor::new());
    let mut served = pin!(
        builder.serve_connection_with_upgrades(TokioIo::new(io), TowerToHyperService::new(service))
    );
    let limits = connection.limits;
    let period = check_period(limits);
    let mut check = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    let mut stopping = false;
    let result = loop {
        tokio::select! {
            result = served.as_mut() => break result,
            _ = stop.cancelled(), if !stopping => {
                stopping = true;
                served.as_mut().graceful_shutdown();
            }
            _ = check.tick() => {
                if let Some(reason) = connection.activity.expired(Instant::now(), limits) {
                    m::record_connection_timeout(reason);
                    debug!(peer = %connection.peer, reason, "closing connection");
                    return;
                }
            }
        }
    };
    if let Err(error) = result {
        debug!(peer = %connection.peer, %error, "connection ended with an error");
    }
}

/// How often a connection's timeouts are checked: often enough to close it within a quarter
/// of the shorter timeout, rarely enough that ten thousand connections cost little.
fn check_period(limits: Limits) -> Duration {
    (limits.header_read_timeout.min(limits.idle_timeout) / 4)
        .clamp(Duration::from_millis(50), Duration::from_secs(1))
}

/// 503 for a request on a connection accepted past the limit, which is then closed.
fn over_limit() -> Response {
    let mut response = crate::http::unavailable(
        "too many connections (server.max_connections); only /health, /ready and /metrics are served on this one",
    );
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// Marks "none" in [`Activity::head_started`].
const NONE: u64 = u64::MAX;

/// What a connection's timeouts are judged on. Times are milliseconds since `born`.
struct Activity {
    born: Instant,
    /// Requests being served.
    in_flight: AtomicUsize,
    /// When the connection last had no request in flight (its start, or the last response).
    idle_since: AtomicU64,
    /// When the first byte arrived while no request was in flight: a request head started.
    head_started: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            born: Instant::now(),
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
            head_started: AtomicU64::new(NONE),
        }
    }

    fn millis(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.born).as_millis()).unwrap_or(NONE - 1)
    }

    /// Bytes arrived from the client.
    fn read(&self) {
        if self.in_flight.load(Ordering::Relaxed) == 0
            && self.head_started.load(Ordering::Relaxed) == NONE
        {
            let now = self.millis(Instant::now());
            let _ =
                self.head_started
                    .compare_exchange(NONE, now, Ordering::Relaxed, Ordering::Relaxed);
        }
    }

    /// No request in flight: the connection is idle or still sending a request's headers.
    fn is_idle(&self) -> bool {
        self.in_flight.load(Ordering::Relaxed) == 0
    }

    /// Bytes of a request's head have arrived and it is not being served yet.
    fn is_reading(&self) -> bool {
        self.head_started.load(Ordering::Relaxed) != NONE
    }

    /// Since when the connection has had no request in flight.
    fn idle_since(&self) -> Instant {
        self.born + Duration::from_millis(self.idle_since.load(Ordering::Relaxed))
    }

    fn request_started(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.head_started.store(NONE, Ordering::Relaxed);
        InFlight(self.clone())
    }

    /// Why the connection should be closed now, if it should.
    fn expired(&self, now: Instant, limits: Limits) -> Option<&'static str> {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return None;
        }
        let now = self.millis(now);
        let head_started = self.head_started.load(Ordering::Relaxed);
        if head_started != NONE {
            let reading = Duration::from_millis(now.saturating_sub(head_started));
            return (reading > limits.header_read_timeout).then_some("header_read_timeout");
        }
        let idle =
            Duration::from_millis(now.saturating_sub(self.idle_since.load(Ordering::Relaxed)));
        (idle > limits.idle_timeout).then_some("idle_timeout")
    }
}

/// A request in flight on a connection; dropped when its response is done (or the request
/// was cancelled).
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let activity = &self.0;
        activity
            .idle_since
            .store(activity.millis(Instant::now()), Ordering::Relaxed);
        activity.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A stream that reports the client's reads to its connection's [`Activity`].
struct Watched<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> Watched<S> {
    fn new(inner: S, activity: Arc<Activity>) -> Self {
        Self { inner, activity }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.read();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            max_connections: 10,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
        }
    }

    #[test]
    fn test_should_close_an_idle_connection_only_after_idle_timeout() {
        let activity = Arc::new(Activity::new());
        let born = activity.born;
        assert_eq!(
            activity.expired(born + Duration::from_secs(59), limits()),
            None
        );
        assert_eq!(
            activity.expired(born + Duration::from_secs(61), limits()),
            Some("idle_timeout")
        );
    }

    #[test]
    fn test_should_close_a_slow_header_after_header_read_timeout() {
        let activity = Arc::new(Activity::new());
        activity.read();
        let born = activity.born;
        assert_eq!(
            activity.expired(born + Duration::from_secs(11), limits()),
            Some("header_read_timeout")
        );
    }

    #[test]
    fn test_should_never_close_a_connection_with_a_request_in_flight() {
        let activity = Arc::new(Activity::new());
        activity.read();
        let request = activity.request_started();
        let born = activity.born;
        assert_eq!(
            activity.expired(born + Duration::from_secs(3600), limits()),
            None
        );
        drop(request);
        // The idle clock starts when the response is done, not when the connection opened.
        assert_eq!(
            activity.expired(Instant::now() + Duration::from_secs(30), limits()),
            None
        );
        assert_eq!(
            activity.expired(Instant::now() + Duration::from_secs(61), limits()),
            Some("idle_timeout")
        );
    }

    #[test]
    fn test_should_evict_the_longest_silent_connection_first_and_never_a_busy_one() {
        let registry = Registry::default();
        let (_, oldest, oldest_evict) = registry.add();
        let (_, reading, reading_evict) = registry.add();
        let (_, busy, busy_evict) = registry.add();
        let (_, newest, newest_evict) = registry.add();
        // Same millisecond clock: make the order of idleness explicit.
        oldest.idle_since.store(0, Ordering::Relaxed);
        newest.idle_since.store(50, Ordering::Relaxed);
        reading.read();
        let _request = busy.request_started();

        assert!(registry.evict_one_idle());
        assert!(oldest_evict.is_cancelled());
        assert!(registry.evict_one_idle());
        assert!(
            newest_evict.is_cancelled(),
            "a silent one before one sending a request"
        );
        assert!(registry.evict_one_idle());
        assert!(reading_evict.is_cancelled());
        assert!(
            !registry.evict_one_idle(),
            "the one with a request in flight stays"
        );
        assert!(!busy_evict.is_cancelled());
        drop((newest, oldest));
    }

    #[test]
    fn test_should_fit_the_connection_limit_to_the_descriptors() {
        assert_eq!(fit_to_descriptors(10_000, 1_048_576), 10_000);
        assert_eq!(
            fit_to_descriptors(10_000, 4096),
            4096 - FD_HEADROOM - RESERVED_CONNECTIONS
        );
        assert_eq!(fit_to_descriptors(10_000, 256), 16);
    }
}
