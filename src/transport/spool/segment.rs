//! One segment file: a run of records, appended and later read in order.
//!
//! A segment is named by its id, zero-padded so that names sort like ids
//! (`00000001.seg`). Only the newest segment of a running spool is written,
//! and only by appending; a segment found on disk at start-up is never
//! appended to again (its tail may be torn), the first append after a
//! restart opens a new one.
//!
//! The valid part of a segment is the longest run of records from its start
//! that all decode (length inside the file, checksum right). The first bad
//! record ends it: whatever follows is skipped, as the framing of what comes
//! after a damaged length can no longer be trusted.

use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::record::{self, Decoded, HEADER_LEN, MAX_PAYLOAD};

/// `00000042.seg` for id 42.
pub fn file_name(id: u64) -> String {
    format!("{id:08}.seg")
}

/// Ids stay below this, so that `id + 1` never overflows whatever names
/// are found on disk.
pub const MAX_ID: u64 = u64::MAX / 2;

/// The id of a segment file name, `None` for any other name.
pub fn parse_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".seg")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().filter(|&id| id < MAX_ID)
}

/// What the spool knows of one segment file.
#[derive(Debug, Clone)]
pub struct Segment {
    pub id: u64,
    pub path: PathBuf,
    /// Length of the valid part: reads never go past it.
    pub valid_len: u64,
    /// Records in the valid part.
    pub records: u64,
}

/// The result of [`Segment::scan`].
#[derive(Debug)]
pub struct Scan {
    pub segment: Segment,
    /// The valid part ends before the end of the file.
    pub corrupt: bool,
    /// The last record boundary at or before the `target` offset given to
    /// the scan, as (offset, records before it).
    pub at: (u64, u64),
}

impl Segment {
    /// Reads a segment found on disk, record by record, to find its valid
    /// part. Memory use is one record at a time.
    pub fn scan(id: u64, path: PathBuf, target: u64) -> io::Result<Scan> {
        let file_len = std::fs::metadata(&path)?.len();
        let mut reader = Reader::open(&path, 0, file_len)?;
        let mut records = 0;
        let mut at = (0, 0);
        let corrupt = loop {
            match reader.read_next()? {
                Next::Record { .. } => {
                    records += 1;
                    if reader.offset <= target {
                        at = (reader.offset, records);
                    }
                }
                Next::End => break false,
                Next::Bad => break true,
            }
        };
        let valid_len = reader.offset;
        Ok(Scan {
            segment: Segment {
                id,
                path,
                valid_len,
                records,
            },
            corrupt,
            at,
        })
    }

    /// A reader of the valid part from `offset` on.
    pub fn reader(&self, offset: u64) -> io::Result<Reader> {
        Reader::open(&self.path, offset, self.valid_len)
    }
}

/// One step of a [`Reader`].
#[derive(Debug)]
pub enum Next {
    Record {
        ts_ms: u64,
        payload: Vec<u8>,
    },
    /// The end of the range was reached cleanly.
    End,
    /// A torn or corrupt record: the valid part ends at the reader's offset.
    Bad,
}

/// Reads records one by one from a byte range of a segment file.
pub struct Reader {
    file: BufReader<File>,
    buf: Vec<u8>,
    /// Offset of the next record.
    pub offset: u64,
    end: u64,
}

impl Reader {
    fn open(path: &Path, offset: u64, end: u64) -> io::Result<Reader> {
        let mut file = File::open(path)?;
        file.seek(SeekFrom::Start(offset))?;
        Ok(Reader {
            file: BufReader::new(file),
            buf: Vec::new(),
            offset,
            end,
        })
    }

    /// The next record; the offset only moves past valid records.
    pub fn read_next(&mut self) -> io::Result<Next> {
        let remaining = self.end.saturating_sub(self.offset);
        if remaining == 0 {
            return Ok(Next::End);
        }
        let mut header = [0; HEADER_LEN];
        if remaining < HEADER_LEN as u64 || !fill(&mut self.file, &mut header)? {
            return Ok(Next::Bad);
        }
        // Bound the read by the announced length *before* allocating: a
        // damaged length must not make us allocate gigabytes.
        let len = record::announced_len(&header);
        if len > MAX_PAYLOAD || (HEADER_LEN + len) as u64 > remaining {
            return Ok(Next::Bad);
        }
        self.buf.clear();
        self.buf.extend_from_slice(&header);
        self.buf.resize(HEADER_LEN + len, 0);
        if !fill(&mut self.file, &mut self.buf[HEADER_LEN..])? {
            return Ok(Next::Bad);
        }
        match record::decode(&self.buf) {
            Decoded::Record {
                ts_ms,
                payload,
                len,
            } => {
                let payload = payload.to_vec();
                self.offset += len as u64;
                Ok(Next::Record { ts_ms, payload })
            }
            Decoded::End | Decoded::Torn | Decoded::Corrupt => Ok(Next::Bad),
        }
    }
}

/// `read_exact`, with a file shorter than expected (truncated behind our
/// back) reported as `false` instead of an error.
fn fill(file: &mut impl Read, buf: &mut [u8]) -> io::Result<bool> {
    match file.read_exact(buf) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    }
}

/// The append handle of the newest segment.
pub struct Writer {
    file: File,
    len: u64,
}

impl Writer {
    /// Opens (creating) a segment file for appending.
    pub fn create(path: &Path) -> io::Result<Writer> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let len = file.metadata()?.len();
        Ok(Writer { file, len })
    }

    /// Appends one encoded record with a single `write_all` of one buffer.
    ///
    /// On failure (full disk, I/O error) the file is cut back to its length
    /// before the call, so that no partial record stays; if even that fails,
    /// the torn tail is left for recovery to detect, and the spool stops
    /// appending to this segment.
    pub fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self.file.write_all(bytes) {
            Ok(()) => {
                self.len += bytes.len() as u64;
                Ok(())
            }
            Err(e) => {
                let _ = self.file.set_len(self.len);
                Err(e)
            }
        }
    }
}
