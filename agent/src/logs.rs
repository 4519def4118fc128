//! The log path inside the agent: files → lines → batches → OTLP → the disk queue, with
//! the positions each batch reaches carried in it. The shipper ([`crate::ship`]) takes it
//! from the queue.
//!
//! Two stages, each on a blocking thread, so that one batch is encoded while the one
//! before it is written to disk:
//! - a [`Batcher`] step reads (a block at a time), cuts a batch (at `max_records` lines,
//!   1 MiB of text, or when its oldest line has waited `max_wait`) and encodes it;
//! - the [`commit`] stage appends the batches waiting for it and makes them durable with
//!   one fsync (group commit), then replaces the checkpoint.
//!
//! Between them at most [`IN_COMMIT`] batches wait; when the queue is full (the collector
//! is slower than the files grow), the commit stage waits, the batcher waits on it and
//! the lines wait in their files: backpressure, nothing dropped. The queue's bytes and
//! oldest-unsent age say so in the agent's metrics.
//!
//! Positions: the queue's newest record carries the positions it reaches and the queue
//! keeps that record ([`DiskQueue::last_record`]), so a restart recovers them from the
//! queue. The checkpoint file (`tail-positions.json`) is a second copy, replaced after
//! each commit but fsynced at most every [`CHECKPOINT_SYNC`]; on start the agent takes,
//! per file, the further of the two.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use crate::agent::Agent;
use crate::config::Compression;
use crate::queue::{DiskQueue, QueueError};
use crate::tail::{self, LogSource, Tailer};
use crate::telemetry::LogStage;

/// How often the sources are listed again (globs expanded, replicas' files looked up).
const LIST_SOURCES: Duration = Duration::from_secs(1);
/// How often files at their end are looked at again.
const LOG_POLL: Duration = Duration::from_millis(250);
/// A log batch is cut at this many bytes of lines, whatever `max_records` says (and at a
/// quarter of the logs queue, so that a small queue still takes whole batches).
const MAX_LOG_BATCH_BYTES: usize = 1 << 20;
/// How often the checkpoint file is fsynced (it is replaced after every commit).
const CHECKPOINT_SYNC: Duration = Duration::from_secs(5);
/// Encoded batches that may wait for the commit stage.
const IN_COMMIT: usize = 2;

/// An encoded batch (its queue envelope) and the positions it reaches.
type Batch = (Vec<u8>, tail::Positions);

/// The tailer and the batch being filled.
struct Batcher {
    agent: Arc<Agent>,
    /// How batches are compressed (`auto` already decided).
    compression: Compression,
    tailer: Tailer,
    /// Positions the tailer started from.
    positions: tail::Positions,
    buffer: Vec<tail::Line>,
    buffered_bytes: usize,
    /// When the oldest buffered line was read.
    first_at: Option<Instant>,
}

impl Batcher {
    fn new(agent: Arc<Agent>, positions: tail::Positions) -> Self {
        let config = agent.config();
        let endpoint = config.logs_endpoint.as_deref().unwrap_or_default();
        Batcher {
            compression: config.logs_compression.for_endpoint(endpoint),
            tailer: Tailer::new(Vec::new(), &positions),
            agent,
            positions,
            buffer: Vec::new(),
            buffered_bytes: 0,
            first_at: None,
        }
    }

    /// What to follow next: every source `wanted` now, and those followed before that are
    /// not finished yet (a stopped replica's last lines, a file a glob let go of, still
    /// count). A path is followed once: a wanted source replaces an old one of the same
    /// path (a reload changed its labels) and continues from its position.
    fn next_sources(&self, known: &[LogSource], wanted: Vec<LogSource>) -> Vec<LogSource> {
        let mut next = wanted;
        for old in known {
            if !next.iter().any(|s| s.path == old.path) && !self.tailer.finished(&old.path) {
                next.push(old.clone());
            }
        }
        next
    }

    /// Follows `sources` from now on. Only between batches: a batch's positions are one
    /// tailer's. A replica started again under the same name continues where its file
    /// left off (its position is kept while the file exists).
    fn follow(&mut self, sources: Vec<LogSource>) -> bool {
        if !self.buffer.is_empty() {
            return false;
        }
        self.positions = tail::merge(&self.positions, &self.tailer.positions());
        self.positions.retain(|path, _| sources.iter().any(|s| &s.path == path) || path.exists());
        self.tailer = Tailer::new(sources, &self.positions);
        true
    }

    /// Sets `hale_agent_log_unread_bytes` for every followed file.
    fn report_unread(&self) {
        for (path, bytes) in self.tailer.unread() {
            self.agent.telemetry.log_unread(path, bytes);
        }
    }

    /// Reads what is new; returns whether it read lines, and the batch if one is due.
    fn step(&mut self) -> (bool, Option<Batch>) {
        let config = &self.agent.config();
        let started = Instant::now();
        let lines = self.tailer.poll(config.batch.max_records.saturating_sub(self.buffer.len()));
        self.agent.telemetry.log_stage(LogStage::Tail, started.elapsed());
        self.report_unread();
        let read = !lines.is_empty();
        if read && self.first_at.is_none() {
            self.first_at = Some(Instant::now());
        }
        self.buffered_bytes += lines.iter().map(|l| l.text.len()).sum::<usize>();
        self.buffer.extend(lines);
        let due = self.buffer.len() >= config.batch.max_records
            || self.buffered_bytes >= MAX_LOG_BATCH_BYTES.min(config.logs_queue.max_bytes as usize / 4)
            || self.first_at.is_some_and(|t| t.elapsed() >= Duration::from_millis(config.batch.max_wait_ms));
        if !due || self.buffer.is_empty() {
            return (read, None);
        }
        let started = Instant::now();
        let telemetry = &self.agent.telemetry;
        let otlp =
            tail::to_otlp(&self.buffer, &config.node, |service, level, n| telemetry.log_lines(service, level, n));
        let otlp = compress(self.compression, otlp);
        let reached = self.tailer.positions();
        let batch = (tail::envelope(&reached, &otlp), reached);
        telemetry.log_stage(LogStage::Encode, started.elapsed());
        self.buffer.clear();
        self.buffered_bytes = 0;
        self.first_at = None;
        (read, Some(batch))
    }
}

/// A batch compressed as configured. It is queued so (a smaller queue holds more), and the
/// shipper names its encoding from the frame's magic number (`ship::content_encoding`).
/// Should compressing fail, the batch goes uncompressed.
fn compress(compression: Compression, otlp: Vec<u8>) -> Vec<u8> {
    use std::io::Write;
    let compressed = match compression {
        Compression::Auto | Compression::None => return otlp,
        // Level 1: a log batch shrinks about tenfold at a few hundred MB/s.
        Compression::Zstd => zstd::bulk::compress(&otlp, 1),
        Compression::Gzip => {
            let mut gz = flate2::write::GzEncoder::new(Vec::with_capacity(otlp.len() / 4), flate2::Compression::fast());
            gz.write_all(&otlp).and_then(|()| gz.finish())
        }
    };
    compressed.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "cannot compress a log batch; it goes uncompressed");
        otlp
    })
}

/// The checkpoint file and the positions of everything committed.
struct Checkpoint {
    path: std::path::PathBuf,
    positions: tail::Positions,
    synced: Option<Instant>,
}

impl Checkpoint {
    /// Where the files were left: the further of the checkpoint and the queue's newest
    /// batch (a checkpoint not synced when the machine stopped is behind it).
    fn load(agent: &Agent, queue: &DiskQueue) -> Self {
        let path = agent.config().data_dir.join("tail-positions.json");
        let mut positions = tail::load_checkpoint(&path);
        if let Ok(Some(last)) = queue.last_record()
            && let Some(queued) = tail::envelope_positions(&last.body)
        {
            positions = tail::merge(&positions, &queued);
        }
        Checkpoint { path, positions, synced: None }
    }

    /// Takes in committed positions and replaces the file; fsyncs it when the last sync
    /// is [`CHECKPOINT_SYNC`] old (the queue's newest batch holds them durably meanwhile).
    fn save(&mut self, reached: &tail::Positions) {
        self.positions = tail::merge(&self.positions, reached);
        // Files gone and no longer followed: a file made again at the path is new.
        self.positions.retain(|path, _| reached.contains_key(path) || path.exists());
        let text = serde_json::to_vec(&self.positions).unwrap_or_default();
        let due = self.synced.is_none_or(|at| at.elapsed() >= CHECKPOINT_SYNC);
        let saved =
            if due { hale_fs::write_durable(&self.path, &text) } else { hale_fs::write_atomic(&self.path, &text) };
        match saved {
            Ok(()) if due => self.synced = Some(Instant::now()),
            Ok(()) => {}
            Err(e) => tracing::error!(error = %e, "cannot save the tail checkpoint"),
        }
    }
}

/// Appends `group` to the queue and makes it durable with one fsync; returns the batches
/// not committed (the queue was full or failed), in order.
fn commit_group(
    queue: &DiskQueue,
    checkpoint: &mut Checkpoint,
    mut group: Vec<Batch>,
) -> (Vec<Batch>, Option<QueueError>) {
    let mut appended = 0;
    let mut error = None;
    for (body, _) in &group {
        match queue.append(body) {
            Ok(_) => appended += 1,
            Err(e) => {
                error = Some(e);
                break;
            }
        }
    }
    if appended > 0 {
        if let Err(e) = queue.sync() {
            // The queue took back what it could not make durable: all of the group waits.
            return (group, Some(e));
        }
        let rest = group.split_off(appended);
        if let Some((_, reached)) = group.last() {
            checkpoint.save(reached);
        }
        group = rest;
    }
    (group, error)
}

/// The commit stage: takes encoded batches as they come, several at a time when the disk
/// is slower than the encoder, until the channel closes.
async fn commit(
    agent: Arc<Agent>,
    queue: Arc<DiskQueue>,
    mut checkpoint: Checkpoint,
    mut batches: mpsc::Receiver<Batch>,
) {
    let mut waiting: Vec<Batch> = Vec::new();
    let mut full_since: Option<Instant> = None;
    loop {
        if waiting.is_empty() {
            match batches.recv().await {
                Some(batch) => waiting.push(batch),
                None => return,
            }
        }
        while waiting.len() < IN_COMMIT
            && let Ok(batch) = batches.try_recv()
        {
            waiting.push(batch);
        }
        let (q, group) = (queue.clone(), std::mem::take(&mut waiting));
        let started = Instant::now();
        let done = tokio::task::spawn_blocking(move || {
            let (rest, error) = commit_group(&q, &mut checkpoint, group);
            (checkpoint, rest, error)
        })
        .await;
        let Ok((c, rest, error)) = done else { return };
        agent.telemetry.log_stage(LogStage::Queue, started.elapsed());
        checkpoint = c;
        waiting = rest;
        if !matches!(error, Some(QueueError::Full { .. }))
            && let Some(since) = full_since.take()
        {
            tracing::info!(waited_s = since.elapsed().as_secs_f64(), "the log queue has room again");
        }
        match error {
            None => {}
            // Backpressure: the lines wait (here, then in their files) until the
            // collector catches up; nothing is dropped.
            Some(QueueError::Full { max_bytes }) => {
                if full_since.is_none() {
                    full_since = Some(Instant::now());
                    tracing::warn!(
                        max_bytes,
                        "the log queue is full: the receiver is slower than the logs grow; lines wait in their files (hale_agent_log_unread_bytes)"
                    );
                }
                tokio::time::sleep(LOG_POLL).await;
                agent.telemetry.log_blocked(LOG_POLL);
            }
            Some(e) => {
                tracing::error!(error = %e, "cannot queue log lines; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Follows the agent's log files and queues their lines until `shutdown`.
pub(crate) async fn run(agent: Arc<Agent>, queue: Arc<DiskQueue>, mut shutdown: watch::Receiver<bool>) {
    let max_wait = Duration::from_millis(agent.config().batch.max_wait_ms);
    let checkpoint = Checkpoint::load(&agent, &queue);
    let mut batcher = Batcher::new(agent.clone(), checkpoint.positions.clone());
    let (to_commit, batches) = mpsc::channel(IN_COMMIT);
    let committer = tokio::spawn(commit(agent.clone(), queue, checkpoint, batches));
    let _stop_committer = AbortOnDrop(committer);
    let mut known: Vec<LogSource> = Vec::new();
    let mut listed: Option<Instant> = None;
    let mut configs = agent.watch_config();
    loop {
        // A reload may change the sources: list them again now.
        if configs.has_changed().unwrap_or(false) {
            configs.mark_unchanged();
            listed = None;
        }
        if listed.is_none_or(|at| at.elapsed() >= LIST_SOURCES) {
            let next = batcher.next_sources(&known, agent.log_sources());
            if next == known || batcher.follow(next.clone()) {
                known = next;
                listed = Some(Instant::now());
            }
        }
        let stepped = tokio::task::spawn_blocking(move || {
            let step = batcher.step();
            (batcher, step)
        })
        .await;
        let (read, batch) = match stepped {
            Ok((b, step)) => {
                batcher = b;
                step
            }
            Err(e) => {
                tracing::error!(error = %e, "the log tailer panicked; log shipping stops");
                return;
            }
        };
        if let Some(batch) = batch {
            // Waits while IN_COMMIT batches are ahead of this one (a full queue holds them
            // up), saying meanwhile how far behind the files the agent falls.
            let send = to_commit.send(batch);
            tokio::pin!(send);
            loop {
                tokio::select! {
                    sent = &mut send => if sent.is_err() { return } else { break },
                    _ = tokio::time::sleep(LOG_POLL) => batcher.report_unread(),
                    _ = shutdown.changed() => return,
                }
            }
        }
        if *shutdown.borrow() {
            return;
        }
        if read {
            tokio::task::yield_now().await;
        } else {
            tokio::select! {
                _ = tokio::time::sleep(LOG_POLL.min(max_wait)) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// Stops a task when its owner stops.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compressed_batches_name_their_encoding_and_round_trip() {
        let otlp: Vec<u8> = [0x0a, 0x03, 1, 2, 3].iter().copied().cycle().take(10_000).collect();
        assert_eq!(crate::ship::content_encoding(&otlp), None);
        assert_eq!(compress(Compression::None, otlp.clone()), otlp);
        let zstd = compress(Compression::Zstd, otlp.clone());
        assert_eq!(crate::ship::content_encoding(&zstd), Some("zstd"));
        assert!(zstd.len() < otlp.len() / 10);
        assert_eq!(zstd::bulk::decompress(&zstd, otlp.len()).expect("zstd"), otlp);
        let gzip = compress(Compression::Gzip, otlp.clone());
        assert_eq!(crate::ship::content_encoding(&gzip), Some("gzip"));
        let mut back = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(gzip.as_slice()), &mut back).expect("gzip");
        assert_eq!(back, otlp);
    }
}
