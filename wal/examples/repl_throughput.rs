//! Replication transport throughput (issue 10): one [`ReplicationServer`] and one standby
//! ([`ReplicationClient`] driven by [`FollowerState`]) on loopback, authenticated the default
//! way (the shared-secret proof bound to the TLS session). For each payload size the primary
//! publishes entries for a fixed time, as the node publishes each group commit, and the
//! standby acknowledges them; the figures are what the standby received and what the primary
//! saw acknowledged (its commit LSN, which needs the standby's ack: the standby is the one
//! member of the committed ISR and `min_in_sync` is 1).
//!
//! The publisher keeps at most `--window-mib` of published but unacknowledged entries, as a
//! primary whose writes wait for their acks would, and below the server's in-memory tail, so
//! every entry is served from memory (catch-up from segments is not measured).
//!
//! Standby modes: `memory` (default) acknowledges on receipt, so the figures are the transport
//! alone; `wal` appends every entry to a real WAL (`append_at`, one `fdatasync` per batch of
//! received frames) before it acknowledges, as a standby does.
//!
//! ```text
//! cargo run --release -p arc-wal --example repl_throughput -- \
//!     [--seconds 10] [--sizes 1024,65536,1048576] [--standby memory|wal] [--window-mib 32]
//! ```

use std::error::Error;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_wal::replication::{
    EntrySource, FollowerAction, FollowerRole, FollowerState, PrimaryConfig, PrimaryStart,
    ReplicationClient, ReplicationServer, ReplicationSettings, SharedSecret,
};
use arc_wal::{Entry, Epoch, Lsn, SyncMode, Wal, WalReader, WalSettings};
use tokio_util::sync::CancellationToken;

type BoxError = Box<dyn Error + Send + Sync>;

const SECRET: &str = "replication benchmark secret, long enough";
const EPOCH: Epoch = Epoch(1);
const STANDBY: &str = "standby-1";
/// Entries per published batch are bounded by this many payload bytes (a group commit).
const BATCH_BYTES: usize = 256 * 1024;
/// Frames the standby takes per step (one sync and one ack per step in `wal` mode).
const STEP_FRAMES: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StandbyMode {
    Memory,
    Wal,
}

struct Args {
    seconds: u64,
    sizes: Vec<usize>,
    standby: StandbyMode,
    window_bytes: u64,
}

fn parse_args() -> Result<Args, BoxError> {
    let mut args = Args {
        seconds: 10,
        sizes: vec![1024, 64 * 1024, 1024 * 1024],
        standby: StandbyMode::Memory,
        window_bytes: 32 * 1024 * 1024,
    };
    let mut raw = std::env::args().skip(1);
    while let Some(flag) = raw.next() {
        let value = raw.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--seconds" => args.seconds = value.parse()?,
            "--sizes" => {
                args.sizes = value.split(',').map(str::parse).collect::<Result<_, _>>()?;
            }
            "--standby" => {
                args.standby = match value.as_str() {
                    "memory" => StandbyMode::Memory,
                    "wal" => StandbyMode::Wal,
                    other => return Err(format!("--standby {other}: memory or wal").into()),
                }
            }
            "--window-mib" => args.window_bytes = value.parse::<u64>()? * 1024 * 1024,
            other => return Err(format!("unknown flag {other}").into()),
        }
    }
    Ok(args)
}

/// What one run measured.
struct Figures {
    seconds: f64,
    /// Entries the primary saw acknowledged within the measured time.
    acked_entries: u64,
    /// Entries the standby received within the measured time.
    received_entries: u64,
}

fn main() -> Result<(), BoxError> {
    let args = parse_args()?;
    // Both ends share the machine's cores, as on one loopback host.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    // Entry sizes and standby mode first, so the figures are read with what produced them.
    println!(
        "standby {:?}, {} s per size, window {} MiB",
        args.standby,
        args.seconds,
        args.window_bytes / (1024 * 1024)
    );
    println!(
        "{:>10} {:>8} {:>10} {:>12} {:>12} {:>14}",
        "payload", "seconds", "entries", "entries/s", "MiB/s acked", "MiB/s received"
    );
    for &size in &args.sizes {
        let figures = runtime.block_on(run(size, &args))?;
        let mib = |entries: u64| entries as f64 * size as f64 / (1024.0 * 1024.0);
        println!(
            "{:>10} {:>8.2} {:>10} {:>12.0} {:>12.1} {:>14.1}",
            size,
            figures.seconds,
            figures.acked_entries,
            figures.acked_entries as f64 / figures.seconds,
            mib(figures.acked_entries) / figures.seconds,
            mib(figures.received_entries) / figures.seconds,
        );
    }
    Ok(())
}

/// A payload of incompressible bytes (QUIC does not compress, but a later layer might).
fn payload(size: usize) -> Vec<u8> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    (0..size)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

async fn run(size: usize, args: &Args) -> Result<Figures, BoxError> {
    let primary_dir = tempfile::tempdir()?;
    let secret = Some(SharedSecret::new(SECRET));
    let primary_settings = ReplicationSettings::new("primary", secret.clone());
    assert!(
        args.window_bytes < primary_settings.tail_cache_bytes as u64,
        "the window must fit in the primary's in-memory tail"
    );
    // Nothing is read back from segments (see the module docs); an empty WAL directory is
    // the source the server needs for catch-up.
    let source: Arc<dyn EntrySource> = Arc::new(WalReader::new(primary_dir.path()));
    let start = PrimaryStart {
        epoch: EPOCH,
        fence_lsn: Lsn(0),
        durable_lsn: None,
        committed_isr: vec![STANDBY.to_string()],
        config: PrimaryConfig {
            lag_limit_ms: 60_000,
            min_in_sync: 1,
            max_reader_backlog: u64::MAX,
        },
    };
    let cancel = CancellationToken::new();
    let (server, _proposals) = ReplicationServer::bind(
        primary_settings,
        "127.0.0.1:0".parse()?,
        start,
        source,
        cancel.clone(),
    )?;
    let handle = server.handle();

    let standby_settings = ReplicationSettings::new(STANDBY, secret);
    let silence_ms = standby_settings.silence_timeout.as_millis() as u64;
    let mut state = FollowerState::new(
        STANDBY,
        FollowerRole::Standby,
        (EPOCH, Lsn(0)),
        Lsn(1),
        silence_ms,
    );
    state.subscribe(0);
    let Some(FollowerAction::Subscribe(subscribe)) = state.poll_action() else {
        return Err("the follower state machine must subscribe first".into());
    };
    let client = ReplicationClient::connect(
        &standby_settings,
        server.local_addr(),
        "localhost",
        subscribe,
        cancel.clone(),
    )
    .await?;
    let standby_dir = tempfile::tempdir()?;
    let wal = match args.standby {
        StandbyMode::Memory => None,
        StandbyMode::Wal => {
            let settings = WalSettings {
                sync_mode: SyncMode::Fdatasync,
                segment_size_bytes: 64 * 1024 * 1024,
                ..WalSettings::new(standby_dir.path())
            };
            Some(Wal::open(settings, Lsn(1))?.0)
        }
    };
    let received = Arc::new(AtomicU64::new(0));
    let standby = tokio::spawn(run_standby(state, client, wal, Arc::clone(&received)));

    // Publish for the measured time, never more than the window ahead of the acks.
    let template = payload(size);
    let per_batch = (BATCH_BYTES / size).max(1) as u64;
    let window_entries = (args.window_bytes / size as u64).max(per_batch);
    let mut acknowledged = handle.acknowledged();
    let mut next = 1u64;
    let started = Instant::now();
    let measure = Duration::from_secs(args.seconds);
    while started.elapsed() < measure {
        let acked = acknowledged.borrow().map_or(0, |lsn| lsn.0);
        if next > acked + window_entries {
            let wait_until = next - window_entries;
            let waited = tokio::time::timeout(
                Duration::from_secs(10),
                acknowledged.wait_for(|lsn| lsn.is_some_and(|lsn| lsn.0 >= wait_until)),
            )
            .await;
            if !matches!(waited, Ok(Ok(_))) {
                return Err(format!("no ack past {acked} for 10 s").into());
            }
            continue;
        }
        let batch: Vec<Entry> = (next..next + per_batch)
            .map(|lsn| Entry {
                epoch: EPOCH,
                lsn: Lsn(lsn),
                payload: template.clone(),
            })
            .collect();
        next += per_batch;
        handle.publish(batch);
    }
    let seconds = started.elapsed().as_secs_f64();
    let acked_entries = acknowledged.borrow().map_or(0, |lsn| lsn.0);
    let received_entries = received.load(Ordering::SeqCst);
    cancel.cancel();
    standby.await??;
    server.shutdown().await;
    Ok(Figures {
        seconds,
        acked_entries,
        received_entries,
    })
}

/// The standby: frames in, entries counted (and appended and synced in `wal` mode), acks out.
async fn run_standby(
    mut state: FollowerState,
    mut client: ReplicationClient,
    mut wal: Option<Wal>,
    received: Arc<AtomicU64>,
) -> Result<(), BoxError> {
    let origin = Instant::now();
    loop {
        // One awaited frame, then whatever else is ready, handled as one step.
        let Some(first) = client.next_frame().await else {
            break;
        };
        let mut frames = vec![first];
        while frames.len() < STEP_FRAMES {
            match tokio::time::timeout(Duration::ZERO, client.next_frame()).await {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) | Err(_) => break,
            }
        }
        let now_ms = origin.elapsed().as_millis() as u64;
        let mut last_appended = None;
        for frame in frames {
            let Ok(frame) = frame else {
                // The benchmark cancelled the connection, or it broke: the run ends.
                client.close().await;
                return Ok(());
            };
            state.frame_received(frame, now_ms);
            while let Some(action) = state.poll_action() {
                match action {
                    FollowerAction::Append(entry) => {
                        if let Some(wal) = wal.as_mut() {
                            tokio::task::block_in_place(|| {
                                wal.append_at(entry.epoch, entry.lsn, &entry.payload)
                            })?;
                        }
                        last_appended = Some(entry.lsn);
                        received.fetch_add(1, Ordering::SeqCst);
                    }
                    FollowerAction::SendAck { durable_lsn } => client.send_ack(durable_lsn),
                    FollowerAction::Resubscribe { reason } => {
                        return Err(format!("the standby dropped the stream: {reason:?}").into());
                    }
                    _ => {}
                }
            }
        }
        if let Some(lsn) = last_appended {
            if let Some(wal) = wal.as_mut() {
                tokio::task::block_in_place(|| -> Result<(), BoxError> {
                    wal.sync()?;
                    // Keep the disk footprint flat: nothing is ever read back.
                    wal.remove_segments_below(lsn)?;
                    Ok(())
                })?;
            }
            state.durable(lsn);
            while let Some(action) = state.poll_action() {
                if let FollowerAction::SendAck { durable_lsn } = action {
                    client.send_ack(durable_lsn);
                }
            }
        }
    }
    client.close().await;
    Ok(())
}
