//! The network side: one thread, one current-thread runtime, a task per
//! connection.
//!
//! The broker runs on its own OS thread (named `recstream-broker`) so that
//! its CPU can be read from `/proc` and it never competes with the
//! runtime of the program that embeds it. All state sits behind plain
//! mutexes in [`Shared`]: every task runs on that one thread, so the locks
//! are uncontended except for the owner's stats and topic calls, and none
//! is ever held across an `.await`.
//!
//! Requests on one connection are answered in order, one at a time, as
//! Kafka does (a long-polling Fetch or a waiting JoinGroup holds only its
//! own connection). A frame that cannot be decoded closes its connection
//! with a log line; nothing a client sends can stop the broker.
//!
//! Outages: [`Control::Down`] closes every connection and the listening
//! socket while keeping all state; [`Control::Serve`] listens again on the
//! same port.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{Notify, watch};

use crate::api::{self, Outcome};
use crate::config::Checked;
use crate::group::Coordinator;
use crate::topics::Topics;

/// How often silent group members and overdue rebalances are looked for.
const GROUP_TICK: Duration = Duration::from_millis(100);
/// Bytes read ahead of a frame's size before it has arrived.
const READ_CHUNK: usize = 64 * 1024;

/// What the owner wants the server to do. Each return from an outage is a
/// new `Serve` epoch, so that a connection that slept through a quick
/// down-and-up still sees that its epoch ended and closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Control {
    Serve(u64),
    Down,
    Stop,
}

/// Counters about the data path, for tests and watches.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub produced_batches: AtomicU64,
    pub duplicate_batches: AtomicU64,
    pub fetched_partitions: AtomicU64,
    pub fetched_batches: AtomicU64,
    pub max_batches_per_partition: AtomicU64,
    /// Fetches waiting for data right now.
    pub parked_fetches: AtomicU64,
}

/// Counts a fetch as parked for as long as it lives (dropped with its
/// future when the connection goes).
pub(crate) struct Parked<'a>(&'a AtomicU64);

impl<'a> Parked<'a> {
    pub(crate) fn new(gauge: &'a AtomicU64) -> Self {
        gauge.fetch_add(1, Ordering::Relaxed);
        Parked(gauge)
    }
}

impl Drop for Parked<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Counters {
    pub(crate) fn record_produce(&self, duplicate: bool) {
        if duplicate {
            self.duplicate_batches.fetch_add(1, Ordering::Relaxed);
        } else {
            self.produced_batches.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn record_fetch(&self, batches: usize) {
        self.fetched_partitions.fetch_add(1, Ordering::Relaxed);
        self.fetched_batches
            .fetch_add(batches as u64, Ordering::Relaxed);
        self.max_batches_per_partition
            .fetch_max(batches as u64, Ordering::Relaxed);
    }
}

/// Everything the connections share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub config: Checked,
    pub port: u16,
    pub topics: Mutex<Topics>,
    pub groups: Mutex<Coordinator>,
    /// Woken by every produce that stored something.
    pub data_arrived: Notify,
    pub next_producer_id: AtomicI64,
    pub stats: Counters,
}

/// A lock that survives a panic elsewhere (there should be none; if there
/// is, serving on beats poisoning every later request).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    pub(crate) fn new(config: Checked, port: u16) -> Self {
        Shared {
            config,
            port,
            topics: Mutex::new(Topics::default()),
            groups: Mutex::new(Coordinator::new()),
            data_arrived: Notify::new(),
            next_producer_id: AtomicI64::new(1000),
            stats: Counters::default(),
        }
    }
}

/// Serves until told to stop.
pub(crate) async fn run(
    shared: Arc<Shared>,
    listener: TcpListener,
    mut control: watch::Receiver<Control>,
) {
    let addr = SocketAddr::from((shared.config.listen.ip(), shared.port));
    let ticker = tokio::spawn(tick_groups(shared.clone()));
    let mut listener = Some(listener);
    loop {
        let state = *control.borrow_and_update();
        match state {
            Control::Stop => break,
            Control::Down => {
                listener = None;
                if control.changed().await.is_err() {
                    break;
                }
            }
            Control::Serve(_) => {
                let Some(l) = &listener else {
                    match rebind(addr) {
                        Ok(l) => listener = Some(l),
                        Err(e) => {
                            tracing::warn!(%addr, "cannot listen again yet: {e}");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                    continue;
                };
                tokio::select! {
                    changed = control.changed() => if changed.is_err() { break },
                    accepted = l.accept() => match accepted {
                        Ok((stream, peer)) => {
                            tokio::spawn(connection(shared.clone(), stream, peer, control.clone()));
                        }
                        Err(e) => {
                            tracing::warn!("accept failed: {e}");
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    },
                }
            }
        }
    }
    ticker.abort();
}

/// The same port again, after an outage (SO_REUSEADDR: connections of
/// before the outage may still be in TIME_WAIT).
fn rebind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

async fn tick_groups(shared: Arc<Shared>) {
    let mut interval = tokio::time::interval(GROUP_TICK);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        lock(&shared.groups).tick(std::time::Instant::now());
    }
}

/// Why a connection ended.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FrameError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("frame size {0} outside 0..={1}")]
    Size(i32, usize),
    #[error("connection closed inside a frame")]
    Truncated,
}

/// One length-prefixed frame, or `None` at a clean end of stream. The
/// buffer grows as bytes arrive, so a size on the wire never allocates
/// more than was actually sent (plus one read chunk).
pub(crate) async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    max: usize,
) -> Result<Option<Bytes>, FrameError> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let size = i32::from_be_bytes(len);
    let want = usize::try_from(size)
        .ok()
        .filter(|s| *s <= max)
        .ok_or(FrameError::Size(size, max))?;
    let mut buf = Vec::with_capacity(want.min(READ_CHUNK));
    r.take(want as u64).read_to_end(&mut buf).await?;
    if buf.len() != want {
        return Err(FrameError::Truncated);
    }
    Ok(Some(Bytes::from(buf)))
}

async fn connection(
    shared: Arc<Shared>,
    stream: TcpStream,
    peer: SocketAddr,
    mut control: watch::Receiver<Control>,
) {
    let _ = stream.set_nodelay(true);
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    let peer_text = peer.ip().to_string();
    let epoch = *control.borrow();
    let serving = |c: &Control| *c == epoch;
    loop {
        let frame = tokio::select! {
            _ = control.wait_for(|c| !serving(c)) => return,
            frame = read_frame(&mut read, shared.config.max_request_bytes) => frame,
        };
        let frame = match frame {
            Ok(Some(frame)) => frame,
            Ok(None) => return,
            Err(e) => {
                tracing::info!(%peer, "closing the connection: {e}");
                return;
            }
        };
        let outcome = tokio::select! {
            _ = control.wait_for(|c| !serving(c)) => return,
            outcome = api::handle(&shared, frame, &peer_text) => outcome,
        };
        match outcome {
            Ok(Outcome::Reply(bytes)) => {
                if let Err(e) = write.write_all(&bytes).await {
                    tracing::debug!(%peer, "closing the connection: {e}");
                    return;
                }
            }
            Ok(Outcome::NoReply) => {}
            Err(e) => {
                tracing::info!(%peer, "closing the connection: {e}");
                return;
            }
        }
    }
}
