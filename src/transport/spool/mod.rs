//! A disk spool: outbound packets kept while the agent has no link to
//! PM2.io, replayed in order once the link is back.
//!
//! ```text
//! dir/ (mode 0700)
//!   00000003.seg   oldest segment, holds the read position
//!   00000004.seg
//!   00000005.seg   newest segment, the only one appended to
//!   cursor         read position: segment id, byte offset, CRC
//! ```
//!
//! * [`record`]: the codec of one record (length, CRC-32, timestamp,
//!   payload);
//! * [`segment`]: one segment file, its recovery scan, reader and writer;
//! * this module: the [`Spool`], which appends to the newest segment, reads
//!   from the cursor with [`Spool::peek`], moves the cursor with
//!   [`Spool::ack`], and deletes segments once read or when over budget.
//!
//! # Using it
//!
//! `append` while the link is down; when it is back, `peek` a batch, send
//! it, `ack` what was sent, and repeat until `is_empty`.
//!
//! # Durability and crash semantics
//!
//! Nothing is fsynced. Every record is written with a single `write_all` of
//! one buffer and lands in the OS page cache, so a crash or kill of the
//! agent process loses nothing that `append` returned `Ok` for; a power cut
//! or kernel crash may lose the last records, or leave a torn or zeroed
//! tail, which recovery detects and skips. Syncing every record would cost
//! a disk flush per packet for a cache of telemetry that is lossy anyway
//! (bounded by size and age).
//!
//! Delivery is **at-least-once for the un-acked tail**: the cursor file is
//! rewritten (temporary file + rename, so it is either the old or the new
//! one) on every `ack`, so a record acked is never replayed after the
//! agent crashes or is killed, while a record peeked and sent but not yet
//! acked will be sent again. A cursor file that is missing or fails its CRC
//! counts as "nothing acked": everything still on disk is replayed. After a
//! power cut (no fsync) the cursor may be an older one, so acked records
//! may be replayed too; it is never ahead of what was acked.
//!
//! # Recovery rules
//!
//! [`Spool::open`] scans every segment in id order. A segment's valid part
//! ends at its first record whose length runs past the end of the file or
//! whose checksum fails; the rest of that segment is skipped and counted
//! **once** in [`SpoolDrops::corrupt`] (it is not known how many records it
//! held), the next segment is read normally. Records older than `max_age`
//! at the read position are skipped and counted in `expired`.
//!
//! # Bounds
//!
//! * size: before an append that would take the segments over `max_bytes`,
//!   whole oldest segments are deleted, their unread records counted in
//!   [`SpoolDrops::full`];
//! * age: records older than `max_age` at the head are skipped by `open`
//!   and `peek`, counted in `expired`, and the cursor is saved past them.
//!   Records are in append order, so the head is the oldest; a record out
//!   of order (clock set back) ends a batch and is skipped at the head of
//!   the next peek.

use std::collections::VecDeque;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub mod record;
pub mod segment;

#[cfg(test)]
mod tests;

use record::{HEADER_LEN, MAX_PAYLOAD};
use segment::{Next, Segment, Writer};

const CURSOR_FILE: &str = "cursor";
const CURSOR_TMP: &str = "cursor.tmp";

/// Where and how much to spool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolConfig {
    /// Directory of the segments and the cursor; created with mode 0700.
    pub dir: PathBuf,
    /// Bound on the bytes of all segments (oldest deleted first).
    pub max_bytes: u64,
    /// Records older than this are skipped, not replayed.
    pub max_age: Duration,
    /// A segment is closed once it reaches about this size (a segment holds
    /// at least one record, so one bigger record makes a bigger segment).
    pub segment_bytes: u64,
}

impl SpoolConfig {
    /// Defaults: 64 MiB, 24 h, segments of 1 MiB.
    pub fn new(dir: PathBuf) -> Self {
        SpoolConfig {
            dir,
            max_bytes: 64 * 1024 * 1024,
            max_age: Duration::from_secs(24 * 3600),
            segment_bytes: 1024 * 1024,
        }
    }
}

/// Records (not bytes) dropped, by reason, since the spool was opened.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SpoolDrops {
    /// Unread records of segments deleted to stay under `max_bytes`.
    pub full: u64,
    /// Records skipped for being older than `max_age`.
    pub expired: u64,
    /// Torn or corrupt segment tails (one per segment tail, see the
    /// module's recovery rules).
    pub corrupt: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool I/O error on {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("spool record of {len} bytes is over the {max} bytes limit")]
    TooLarge { len: usize, max: usize },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A place in the spool: byte `offset` of segment `seg`, with `index`
/// records of that segment before it. Ordered by (seg, offset).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Pos {
    seg: u64,
    offset: u64,
    index: u64,
}

impl Pos {
    fn start(seg: u64) -> Pos {
        Pos {
            seg,
            offset: 0,
            index: 0,
        }
    }
}

type Clock = Box<dyn Fn() -> u64 + Send + Sync>;

fn system_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// An append-only disk spool; see the module documentation.
pub struct Spool {
    cfg: SpoolConfig,
    /// In id order; the front one holds the cursor.
    segments: VecDeque<Segment>,
    /// Append handle of `segments.back()`, when it is being written.
    writer: Option<Writer>,
    /// Read position: the first unread record.
    cursor: Pos,
    /// Id of the next segment created.
    next_id: u64,
    /// Position after each record of the last peek not acked yet.
    peeked: Vec<Pos>,
    drops: SpoolDrops,
    now_ms: Clock,
}

impl Spool {
    /// Opens (creating the dir, mode 0700) and recovers: scans segments in
    /// order, validates records, a torn or corrupt tail is detected by
    /// length/checksum and skipped (counted in `corrupt`), expired records
    /// skipped (counted). Never panics on any file content.
    pub fn open(cfg: SpoolConfig) -> Result<Spool, SpoolError> {
        Self::open_with_clock(cfg, Box::new(system_now_ms))
    }

    fn open_with_clock(cfg: SpoolConfig, now_ms: Clock) -> Result<Spool, SpoolError> {
        create_dir(&cfg.dir).map_err(io_err(&cfg.dir))?;
        let saved = read_cursor(&cfg.dir);
        let (cur_seg, cur_offset) = saved.unwrap_or((0, 0));

        let mut ids = Vec::new();
        for entry in std::fs::read_dir(&cfg.dir).map_err(io_err(&cfg.dir))? {
            let entry = entry.map_err(io_err(&cfg.dir))?;
            if let Some(id) = entry.file_name().to_str().and_then(segment::parse_name) {
                ids.push((id, entry.path()));
            }
        }
        ids.sort();

        let mut spool = Spool {
            // Never the cursor's id: a new segment must not inherit the
            // read offset of a deleted one.
            next_id: ids.last().map_or(1, |(id, _)| id + 1).max(cur_seg + 1),
            cursor: Pos::start(cur_seg),
            cfg,
            segments: VecDeque::new(),
            writer: None,
            peeked: Vec::new(),
            drops: SpoolDrops::default(),
            now_ms,
        };
        for (id, path) in ids {
            // Anything but a regular file (a directory, a device) is not
            // ours to read.
            if !std::fs::metadata(&path).is_ok_and(|m| m.is_file()) {
                continue;
            }
            if id < cur_seg {
                // Consumed; its deletion was cut short.
                remove(&path)?;
                continue;
            }
            let target = if id == cur_seg { cur_offset } else { 0 };
            let scan = Segment::scan(id, path.clone(), target).map_err(io_err(&path))?;
            if scan.corrupt {
                spool.drops.corrupt += 1;
            }
            if id == cur_seg {
                let (offset, index) = scan.at;
                spool.cursor = Pos {
                    seg: id,
                    offset,
                    index,
                };
            }
            spool.segments.push_back(scan.segment);
        }
        spool.normalize()?;
        // Skips (and counts) the expired records at the head.
        spool.peek(0, 0)?;
        spool.peeked.clear();
        Ok(spool)
    }

    /// Appends one record (opaque bytes, at most 16 MiB and `max_bytes`
    /// minus a 16-byte header, else [`SpoolError::TooLarge`]).
    ///
    /// When over `max_bytes`, whole oldest segments are deleted first (their
    /// unread records counted in `full`). The record is written with a
    /// single write and no fsync (see the module documentation); a failed
    /// write is cut back, and the next append starts a new segment.
    pub fn append(&mut self, record: &[u8]) -> Result<(), SpoolError> {
        let max = MAX_PAYLOAD.min(self.cfg.max_bytes.saturating_sub(HEADER_LEN as u64) as usize);
        if record.len() > max {
            return Err(SpoolError::TooLarge {
                len: record.len(),
                max,
            });
        }
        let bytes = record::encode((self.now_ms)(), record);
        let len = bytes.len() as u64;

        // Room first: whole oldest segments go.
        let mut total: u64 = self.segments.iter().map(|s| s.valid_len).sum();
        while total + len > self.cfg.max_bytes {
            let Some(old) = self.segments.pop_front() else {
                break;
            };
            self.drops.full += self.unread(&old).0;
            total -= old.valid_len;
            if self.segments.is_empty() {
                self.writer = None;
            }
            remove(&old.path)?;
        }
        self.normalize()?;

        // Then the segment to write: the current one unless it is full.
        if let (Some(_), Some(last)) = (&self.writer, self.segments.back()) {
            if last.valid_len > 0 && last.valid_len + len > self.cfg.segment_bytes {
                self.writer = None;
            }
        }
        if self.writer.is_none() {
            let id = self.next_id;
            let path = self.cfg.dir.join(segment::file_name(id));
            let writer = Writer::create(&path).map_err(io_err(&path))?;
            self.next_id += 1;
            self.segments.push_back(Segment {
                id,
                path,
                valid_len: 0,
                records: 0,
            });
            self.writer = Some(writer);
            self.normalize()?;
        }

        let (Some(writer), Some(last)) = (&mut self.writer, self.segments.back_mut()) else {
            unreachable!("a writer was just opened");
        };
        match writer.append(&bytes) {
            Ok(()) => {
                last.valid_len += len;
                last.records += 1;
                Ok(())
            }
            Err(e) => {
                self.writer = None;
                Err(io_err(&last.path)(e))
            }
        }
    }

    /// Up to `max_records` / about `max_bytes` (of payload; at least one
    /// record when there is one) records from the read position, oldest
    /// first, without consuming them. Expired records at the head are
    /// skipped and counted (so `peek(0, 0)` only does that).
    pub fn peek(
        &mut self,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<Vec<u8>>, SpoolError> {
        let now = (self.now_ms)();
        let max_age = u64::try_from(self.cfg.max_age.as_millis()).unwrap_or(u64::MAX);
        let mut out: Vec<Vec<u8>> = Vec::new();
        let mut peeked = Vec::new();
        let mut bytes = 0;
        let start = self.cursor;
        let mut pos = start;
        let writing = self.writer.as_ref().and(self.segments.back()).map(|s| s.id);
        'segments: for seg in self.segments.iter_mut() {
            if seg.id < pos.seg {
                continue;
            }
            if seg.id > pos.seg {
                pos = Pos::start(seg.id);
            }
            let mut reader = seg.reader(pos.offset).map_err(io_err(&seg.path))?;
            loop {
                let (ts_ms, payload) = match reader.read_next().map_err(io_err(&seg.path))? {
                    Next::Record { ts_ms, payload } => (ts_ms, payload),
                    Next::End => break,
                    Next::Bad => {
                        // Damaged since `open` scanned it: same rule.
                        self.drops.corrupt += 1;
                        seg.valid_len = pos.offset;
                        seg.records = pos.index;
                        if writing == Some(seg.id) {
                            // Never append after a damaged part.
                            self.writer = None;
                        }
                        break;
                    }
                };
                let after = Pos {
                    seg: seg.id,
                    offset: reader.offset,
                    index: pos.index + 1,
                };
                if now.saturating_sub(ts_ms) > max_age {
                    if !out.is_empty() {
                        break 'segments;
                    }
                    self.drops.expired += 1;
                    self.cursor = after;
                    pos = after;
                    continue;
                }
                if out.len() >= max_records
                    || (!out.is_empty() && bytes + payload.len() > max_bytes)
                {
                    break 'segments;
                }
                bytes += payload.len();
                out.push(payload);
                peeked.push(after);
                pos = after;
            }
        }
        self.peeked = peeked;
        if self.cursor != start {
            // Expired records are dropped for good, not counted again
            // after a restart.
            self.write_cursor()?;
        }
        self.normalize()?;
        Ok(out)
    }

    /// Consumes the first `n` records that the last peek returned (minus
    /// those acked since): advances the read position and persists it (tmp
    /// file + rename), deleting segments fully consumed. `n` is clamped to
    /// what that peek returned; records of it deleted by the size bound
    /// meanwhile are already gone.
    pub fn ack(&mut self, n: usize) -> Result<(), SpoolError> {
        let n = n.min(self.peeked.len());
        if n == 0 {
            return Ok(());
        }
        let target = self.peeked[n - 1];
        self.peeked.drain(..n);
        if target > self.cursor {
            self.cursor = target;
        }
        self.write_cursor()?;
        self.normalize()
    }

    /// No unread record.
    pub fn is_empty(&self) -> bool {
        self.pending_records() == 0
    }

    /// Unread records.
    pub fn pending_records(&self) -> u64 {
        self.segments.iter().map(|s| self.unread(s).0).sum()
    }

    /// Bytes on disk of unread records (headers included).
    pub fn size_bytes(&self) -> u64 {
        self.segments.iter().map(|s| self.unread(s).1).sum()
    }

    pub fn drops(&self) -> SpoolDrops {
        self.drops
    }

    /// Unread (records, bytes) of a segment.
    fn unread(&self, s: &Segment) -> (u64, u64) {
        match s.id.cmp(&self.cursor.seg) {
            std::cmp::Ordering::Less => (0, 0),
            std::cmp::Ordering::Equal => (
                s.records.saturating_sub(self.cursor.index),
                s.valid_len.saturating_sub(self.cursor.offset),
            ),
            std::cmp::Ordering::Greater => (s.records, s.valid_len),
        }
    }

    /// Deletes the front segments fully consumed (but not the one being
    /// written) and puts the cursor at the first unread record.
    fn normalize(&mut self) -> Result<(), SpoolError> {
        while let Some(front) = self.segments.front() {
            let written = self.writer.is_some() && self.segments.len() == 1;
            let consumed = front.id < self.cursor.seg
                || (front.id == self.cursor.seg && self.cursor.offset >= front.valid_len);
            if !consumed || written {
                break;
            }
            remove(&front.path)?;
            self.segments.pop_front();
        }
        match self.segments.front() {
            Some(front) if front.id > self.cursor.seg => self.cursor = Pos::start(front.id),
            None => self.cursor = Pos::start(self.next_id),
            Some(_) => {}
        }
        Ok(())
    }

    /// Persists the cursor: `[seg u64 LE][offset u64 LE][crc32 u32 LE]`,
    /// written to a temporary file then renamed over the old one.
    fn write_cursor(&self) -> Result<(), SpoolError> {
        let mut buf = Vec::with_capacity(20);
        buf.extend_from_slice(&self.cursor.seg.to_le_bytes());
        buf.extend_from_slice(&self.cursor.offset.to_le_bytes());
        buf.extend_from_slice(&crc32fast::hash(&buf).to_le_bytes());
        let tmp = self.cfg.dir.join(CURSOR_TMP);
        std::fs::write(&tmp, &buf).map_err(io_err(&tmp))?;
        let path = self.cfg.dir.join(CURSOR_FILE);
        std::fs::rename(&tmp, &path).map_err(io_err(&path))
    }
}

/// The saved cursor, `None` when missing or damaged.
fn read_cursor(dir: &Path) -> Option<(u64, u64)> {
    let buf = std::fs::read(dir.join(CURSOR_FILE)).ok()?;
    let buf: &[u8; 20] = buf.as_slice().try_into().ok()?;
    let (body, crc) = buf.split_at(16);
    if crc32fast::hash(body).to_le_bytes() != crc {
        return None;
    }
    let seg = u64::from_le_bytes(body[..8].try_into().ok()?);
    let offset = u64::from_le_bytes(body[8..].try_into().ok()?);
    (seg < segment::MAX_ID).then_some((seg, offset))
}

fn create_dir(dir: &Path) -> io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)?;
    // `create` succeeds on an existing directory; something else there is
    // an error now rather than on the first append.
    if !std::fs::metadata(dir)?.is_dir() {
        return Err(io::Error::other("not a directory"));
    }
    Ok(())
}

fn remove(path: &Path) -> Result<(), SpoolError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err(path)(e)),
        _ => Ok(()),
    }
}
