use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use proptest::prelude::*;

use super::record::{self, Decoded, HEADER_LEN};
use super::*;

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("ka-spool-{}-{name}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        TempDir(dir)
    }
    fn cfg(&self, segment_bytes: u64) -> SpoolConfig {
        SpoolConfig {
            segment_bytes,
            ..SpoolConfig::new(self.0.clone())
        }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    files.sort();
    files
}

/// Peeks and acks batches until the spool is empty.
fn drain(spool: &mut Spool) -> Vec<Vec<u8>> {
    let mut all = Vec::new();
    loop {
        let batch = spool.peek(3, 1 << 20).unwrap();
        if batch.is_empty() {
            assert!(spool.is_empty());
            return all;
        }
        spool.ack(batch.len()).unwrap();
        all.extend(batch);
    }
}

fn numbered(n: usize) -> Vec<Vec<u8>> {
    (0..n).map(|i| format!("record-{i}").into_bytes()).collect()
}

fn clock(at: &Arc<AtomicU64>) -> Clock {
    let at = at.clone();
    Box::new(move || at.load(Ordering::Relaxed))
}

/// The spool moves into the transporter's task.
const _: fn() = || {
    fn send<T: Send>() {}
    send::<Spool>();
};

// ---- record codec ----

proptest! {
    #[test]
    fn codec_round_trips_and_detects_truncation(ts in any::<u64>(), payload in prop::collection::vec(any::<u8>(), 0..300), cut in any::<prop::sample::Index>()) {
        let bytes = record::encode(ts, &payload);
        prop_assert_eq!(record::decode(&bytes), Decoded::Record { ts_ms: ts, payload: &payload, len: bytes.len() });
        let cut = cut.index(bytes.len());
        let expected = if cut == 0 { Decoded::End } else { Decoded::Torn };
        prop_assert_eq!(record::decode(&bytes[..cut]), expected);
    }

    #[test]
    fn codec_rejects_any_flipped_byte(payload in prop::collection::vec(any::<u8>(), 0..300), at in any::<prop::sample::Index>(), xor in 1..=255u8) {
        let mut bytes = record::encode(7, &payload);
        let at = at.index(bytes.len());
        bytes[at] ^= xor;
        let decoded = record::decode(&bytes);
        prop_assert!(matches!(decoded, Decoded::Torn | Decoded::Corrupt), "{:?}", decoded);
    }
}

#[test]
fn zeroed_region_is_corrupt() {
    assert_eq!(record::decode(&[0; 64]), Decoded::Corrupt);
}

// ---- (1) round trip, order, segments ----

#[test]
fn round_trip_in_order_across_segments() {
    let tmp = TempDir::new("roundtrip");
    let mut spool = Spool::open(tmp.cfg(100)).unwrap();
    assert!(spool.is_empty());
    let records = numbered(40);
    for r in &records {
        spool.append(r).unwrap();
    }
    assert!(segment_files(&tmp.0).len() > 5);
    assert_eq!(spool.pending_records(), 40);

    // Peek does not consume; ack consumes the first n of the peek.
    assert_eq!(spool.peek(7, usize::MAX).unwrap(), records[..7]);
    assert_eq!(spool.peek(7, usize::MAX).unwrap(), records[..7]);
    spool.ack(3).unwrap();
    assert_eq!(spool.pending_records(), 37);
    spool.ack(2).unwrap(); // the rest of that peek, in two acks
    assert_eq!(spool.peek(2, usize::MAX).unwrap(), records[5..7]);
    // The byte budget: at least one record, then stop before going over.
    assert_eq!(spool.peek(10, 1).unwrap(), records[5..6]);
    assert_eq!(spool.peek(10, 20).unwrap(), records[5..7]);

    spool.ack(1).unwrap();
    let rest = drain(&mut spool);
    assert_eq!(rest, records[6..]);
    assert_eq!(spool.pending_records(), 0);
    assert_eq!(spool.size_bytes(), 0);
    // Consumed segments are gone; only the one being written may stay.
    assert!(segment_files(&tmp.0).len() <= 1);
    assert_eq!(spool.drops(), SpoolDrops::default());

    // Appending after draining keeps working.
    spool.append(b"late").unwrap();
    assert_eq!(drain(&mut spool), vec![b"late".to_vec()]);
}

// ---- (2) restart ----

#[test]
fn reopen_continues_from_persisted_cursor() {
    let tmp = TempDir::new("reopen");
    let records = numbered(30);
    {
        let mut spool = Spool::open(tmp.cfg(120)).unwrap();
        for r in &records {
            spool.append(r).unwrap();
        }
        assert_eq!(spool.peek(12, usize::MAX).unwrap(), records[..12]);
        spool.ack(8).unwrap();
        // 8..12 were peeked (sent) but never acked: replayed after restart.
    }
    let mut spool = Spool::open(tmp.cfg(120)).unwrap();
    assert_eq!(spool.pending_records(), 22);
    spool.append(b"after restart").unwrap();
    let mut expected = records[8..].to_vec();
    expected.push(b"after restart".to_vec());
    assert_eq!(spool.peek(100, usize::MAX).unwrap(), expected);
    spool.ack(5).unwrap();
    drop(spool);

    let mut spool = Spool::open(tmp.cfg(120)).unwrap();
    assert_eq!(drain(&mut spool), expected[5..]);
    drop(spool);
    let mut spool = Spool::open(tmp.cfg(120)).unwrap();
    assert!(spool.is_empty());
    assert!(spool.peek(10, usize::MAX).unwrap().is_empty());
    assert_eq!(spool.drops(), SpoolDrops::default());
}

#[test]
fn damaged_cursor_replays_everything() {
    let tmp = TempDir::new("cursor");
    let records = numbered(10);
    {
        let mut spool = Spool::open(tmp.cfg(1 << 20)).unwrap();
        for r in &records {
            spool.append(r).unwrap();
        }
        spool.peek(4, usize::MAX).unwrap();
        spool.ack(4).unwrap();
    }
    let cursor = tmp.0.join(CURSOR_FILE);
    let mut bytes = std::fs::read(&cursor).unwrap();
    bytes[9] ^= 1;
    std::fs::write(&cursor, bytes).unwrap();
    let mut spool = Spool::open(tmp.cfg(1 << 20)).unwrap();
    assert_eq!(drain(&mut spool), records);
}

// ---- (3) torn tail ----

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn truncated_last_segment_yields_a_prefix(
        records in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..80), 1..25),
        cut in any::<prop::sample::Index>(),
    ) {
        let tmp = TempDir::new("torn");
        {
            let mut spool = Spool::open(tmp.cfg(200)).unwrap();
            for r in &records {
                spool.append(r).unwrap();
            }
        }
        let files = segment_files(&tmp.0);
        let last = files.last().unwrap();
        let len = std::fs::metadata(last).unwrap().len();
        let cut = cut.index(len as usize + 1) as u64;
        std::fs::OpenOptions::new().write(true).open(last).unwrap().set_len(cut).unwrap();

        let mut spool = Spool::open(tmp.cfg(200)).unwrap();
        let got = drain(&mut spool);
        prop_assert!(got.len() <= records.len());
        prop_assert_eq!(&got[..], &records[..got.len()]);
        // Only a cut inside a record is a torn tail.
        prop_assert!(spool.drops().corrupt <= 1);
    }
}

// ---- (4) flipped bytes ----

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn flipped_bytes_yield_only_valid_records(
        records in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..80), 1..25),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<prop::sample::Index>(), 1..=255u8), 1..4),
    ) {
        let tmp = TempDir::new("flip");
        {
            let mut spool = Spool::open(tmp.cfg(200)).unwrap();
            for r in &records {
                spool.append(r).unwrap();
            }
        }
        let files = segment_files(&tmp.0);
        let before: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).unwrap()).collect();
        for (file, at, xor) in flips {
            let file = file.get(&files);
            let mut bytes = std::fs::read(file).unwrap();
            let at = at.index(bytes.len());
            bytes[at] ^= xor;
            std::fs::write(file, bytes).unwrap();
        }
        // Two flips of one byte may cancel out.
        let changed = files.iter().zip(&before).any(|(f, b)| std::fs::read(f).unwrap() != *b);
        let mut spool = Spool::open(tmp.cfg(200)).unwrap();
        let got = drain(&mut spool);
        // What comes back is the written records in order, some missing.
        let mut written = records.iter();
        for r in &got {
            prop_assert!(written.any(|w| w == r), "record not written or out of order");
        }
        if changed {
            prop_assert!(got.len() < records.len());
            prop_assert!(spool.drops().corrupt >= 1);
        }
    }
}

#[test]
fn corrupt_record_ends_only_its_segment() {
    let tmp = TempDir::new("corrupt");
    // 4 records of 16 + 8 bytes per 100-byte segment.
    let records = numbered(8).into_iter().map(|mut r| {
        r.resize(8, b'.');
        r
    });
    let records: Vec<Vec<u8>> = records.collect();
    {
        let mut spool = Spool::open(tmp.cfg(100)).unwrap();
        for r in &records {
            spool.append(r).unwrap();
        }
    }
    let files = segment_files(&tmp.0);
    assert_eq!(files.len(), 2);
    let mut bytes = std::fs::read(&files[0]).unwrap();
    bytes[24 + HEADER_LEN + 3] ^= 0x40; // payload of the second record
    std::fs::write(&files[0], bytes).unwrap();

    let mut spool = Spool::open(tmp.cfg(100)).unwrap();
    assert_eq!(spool.drops().corrupt, 1);
    assert_eq!(spool.pending_records(), 5);
    let mut expected = vec![records[0].clone()];
    expected.extend_from_slice(&records[4..]);
    assert_eq!(drain(&mut spool), expected);
}

#[test]
fn damage_after_open_is_detected_by_peek() {
    let tmp = TempDir::new("late-damage");
    let mut spool = Spool::open(tmp.cfg(1 << 20)).unwrap();
    let records = numbered(5);
    for r in &records {
        spool.append(r).unwrap();
    }
    let seg = &segment_files(&tmp.0)[0];
    let mut bytes = std::fs::read(seg).unwrap();
    let second = HEADER_LEN + records[0].len();
    bytes[second + HEADER_LEN] ^= 1;
    std::fs::write(seg, bytes).unwrap();

    assert_eq!(spool.peek(10, usize::MAX).unwrap(), records[..1]);
    assert_eq!(spool.drops().corrupt, 1);
    assert_eq!(spool.pending_records(), 1);
    // Appends go to a new segment, never after the damaged part.
    spool.append(b"next").unwrap();
    assert_eq!(
        drain(&mut spool),
        vec![records[0].clone(), b"next".to_vec()]
    );
}

// ---- (5) size bound ----

#[test]
fn max_bytes_deletes_oldest_segments() {
    let tmp = TempDir::new("full");
    let cfg = SpoolConfig {
        max_bytes: 1000,
        ..tmp.cfg(200)
    };
    let mut spool = Spool::open(cfg).unwrap();
    let records: Vec<Vec<u8>> = (0..100).map(|i| vec![i as u8; 50]).collect();
    for r in &records {
        spool.append(r).unwrap();
        assert!(spool.size_bytes() <= 1000 + 200);
        let on_disk: u64 = segment_files(&tmp.0)
            .iter()
            .map(|f| std::fs::metadata(f).unwrap().len())
            .sum();
        assert!(on_disk <= 1000 + 200, "{on_disk}");
    }
    let drops = spool.drops();
    assert!(drops.full > 0);
    assert_eq!(drops.full + spool.pending_records(), 100);
    let kept = drain(&mut spool);
    assert_eq!(kept, records[records.len() - kept.len()..]);
}

#[test]
fn eviction_under_a_pending_peek_is_harmless() {
    let tmp = TempDir::new("evict-peek");
    let cfg = SpoolConfig {
        max_bytes: 300,
        ..tmp.cfg(100)
    };
    let mut spool = Spool::open(cfg).unwrap();
    let records: Vec<Vec<u8>> = (0..30).map(|i| vec![i as u8; 10]).collect();
    for r in &records[..10] {
        spool.append(r).unwrap();
    }
    let peeked = spool.peek(100, usize::MAX).unwrap();
    for r in &records[10..] {
        spool.append(r).unwrap();
    }
    spool.ack(peeked.len()).unwrap(); // all of them were evicted meanwhile
    let kept = drain(&mut spool);
    assert_eq!(spool.drops().full as usize + kept.len(), 30);
    assert_eq!(kept, records[30 - kept.len()..]);
}

// ---- (6) age bound ----

#[test]
fn max_age_skips_and_counts_old_records() {
    let tmp = TempDir::new("age");
    let now = Arc::new(AtomicU64::new(1_000_000));
    let cfg = SpoolConfig {
        max_age: Duration::from_millis(1000),
        ..tmp.cfg(100)
    };
    let mut spool = Spool::open_with_clock(cfg.clone(), clock(&now)).unwrap();
    let records = numbered(10);
    for r in &records[..5] {
        spool.append(r).unwrap();
    }
    now.fetch_add(1500, Ordering::Relaxed);
    for r in &records[5..] {
        spool.append(r).unwrap();
    }
    now.fetch_add(600, Ordering::Relaxed);
    assert_eq!(spool.peek(100, usize::MAX).unwrap(), records[5..]);
    assert_eq!(spool.drops().expired, 5);
    // Counted once, however many peeks.
    assert_eq!(spool.peek(100, usize::MAX).unwrap(), records[5..]);
    assert_eq!(spool.drops().expired, 5);
    assert_eq!(spool.pending_records(), 5);
    drop(spool);

    // At open, the expired head is skipped and counted; those skipped
    // before the restart are not counted again.
    now.fetch_add(1000, Ordering::Relaxed);
    let mut spool = Spool::open_with_clock(cfg, clock(&now)).unwrap();
    assert_eq!(spool.drops().expired, 5);
    assert!(spool.is_empty());
    assert!(spool.peek(100, usize::MAX).unwrap().is_empty());
}

// ---- (7) errors, not panics ----

#[test]
fn open_on_a_file_is_an_error() {
    let tmp = TempDir::new("notdir");
    std::fs::write(&tmp.0, b"x").unwrap();
    let err = Spool::open(tmp.cfg(100)).err().expect("open must fail");
    assert!(matches!(err, SpoolError::Io { .. }), "{err}");
    std::fs::remove_file(&tmp.0).unwrap();
}

#[test]
fn append_into_a_vanished_dir_is_an_error() {
    let tmp = TempDir::new("vanished");
    let mut spool = Spool::open(tmp.cfg(100)).unwrap();
    std::fs::remove_dir_all(&tmp.0).unwrap();
    std::fs::write(&tmp.0, b"not a dir").unwrap();
    assert!(matches!(spool.append(b"x"), Err(SpoolError::Io { .. })));
    std::fs::remove_file(&tmp.0).unwrap();
}

#[test]
fn oversized_record_is_an_error() {
    let tmp = TempDir::new("large");
    let cfg = SpoolConfig {
        max_bytes: 100,
        ..tmp.cfg(100)
    };
    let mut spool = Spool::open(cfg).unwrap();
    let err = spool.append(&[0; 85]).unwrap_err();
    assert!(
        matches!(err, SpoolError::TooLarge { len: 85, max: 84 }),
        "{err}"
    );
    spool.append(&[0; 84]).unwrap();
}

#[cfg(unix)]
#[test]
fn read_only_dir_is_an_error() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = TempDir::new("readonly");
    let mut spool = Spool::open(tmp.cfg(100)).unwrap();
    assert_eq!(
        std::fs::metadata(&tmp.0).unwrap().permissions().mode() & 0o777,
        0o700
    );
    std::fs::set_permissions(&tmp.0, std::fs::Permissions::from_mode(0o500)).unwrap();
    // Root ignores permissions: nothing to test then.
    let probe = tmp.0.join("probe");
    if std::fs::write(&probe, b"").is_err() {
        assert!(matches!(spool.append(b"x"), Err(SpoolError::Io { .. })));
    } else {
        let _ = std::fs::remove_file(probe);
    }
    std::fs::set_permissions(&tmp.0, std::fs::Permissions::from_mode(0o700)).unwrap();
}

/// A full disk, for real: the next segment file is a link to `/dev/full`,
/// whose writes fail with ENOSPC.
#[cfg(target_os = "linux")]
#[test]
fn full_disk_is_an_error_and_leaves_no_bad_record() {
    let tmp = TempDir::new("devfull");
    let mut spool = Spool::open(tmp.cfg(1 << 20)).unwrap();
    let link = tmp.0.join(segment::file_name(1));
    std::os::unix::fs::symlink("/dev/full", &link).unwrap();
    let err = spool.append(b"lost").unwrap_err();
    assert!(matches!(err, SpoolError::Io { .. }), "{err}");
    assert!(spool.is_empty());
    std::fs::remove_file(&link).unwrap();
    // The next append opens a new segment and works.
    spool.append(b"kept").unwrap();
    assert_eq!(spool.peek(10, usize::MAX).unwrap(), vec![b"kept".to_vec()]);
    drop(spool);
    let mut spool = Spool::open(tmp.cfg(1 << 20)).unwrap();
    assert_eq!(drain(&mut spool), vec![b"kept".to_vec()]);
    assert_eq!(spool.drops(), SpoolDrops::default());
}

// ---- any file content ----

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Arbitrary segment and cursor files: `open` and draining never panic,
    /// and what comes back decodes.
    #[test]
    fn arbitrary_files_never_panic(
        seg in prop::collection::vec(any::<u8>(), 0..200),
        valid in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..20), 0..4),
        cursor_seg in prop_oneof![Just(0u64), Just(1), Just(2), Just(u64::MAX)],
        cursor_offset in prop_oneof![0..100u64, Just(u64::MAX)],
    ) {
        let tmp = TempDir::new("garbage");
        std::fs::create_dir_all(&tmp.0).unwrap();
        let mut good = Vec::new();
        for v in &valid {
            good.extend(record::encode(0, v));
        }
        good.extend(&seg);
        std::fs::write(tmp.0.join(segment::file_name(1)), &good).unwrap();
        std::fs::write(tmp.0.join(segment::file_name(2)), &seg).unwrap();
        let mut cursor = Vec::new();
        cursor.extend(cursor_seg.to_le_bytes());
        cursor.extend(cursor_offset.to_le_bytes());
        cursor.extend(crc32fast::hash(&cursor).to_le_bytes());
        std::fs::write(tmp.0.join(CURSOR_FILE), cursor).unwrap();

        let cfg = SpoolConfig { max_age: Duration::MAX, ..tmp.cfg(100) };
        let mut spool = Spool::open(cfg.clone()).unwrap();
        let got = drain(&mut spool);
        if cursor_seg <= 1 && cursor_offset == 0 {
            prop_assert!(got.len() >= valid.len());
            prop_assert_eq!(&got[..valid.len()], &valid[..]);
        }
        spool.append(b"after").unwrap();
        drop(spool);
        let mut spool = Spool::open(cfg).unwrap();
        prop_assert_eq!(drain(&mut spool), vec![b"after".to_vec()]);
    }
}

#[test]
fn new_segment_after_restart_does_not_reuse_the_cursor_id() {
    let tmp = TempDir::new("reuse");
    {
        let mut spool = Spool::open(tmp.cfg(1 << 20)).unwrap();
        spool.append(b"one").unwrap();
    }
    {
        // Segment 1 is read to its end and deleted; the cursor names it.
        let mut spool = Spool::open(tmp.cfg(1 << 20)).unwrap();
        assert_eq!(drain(&mut spool), vec![b"one".to_vec()]);
        assert!(segment_files(&tmp.0).is_empty());
    }
    {
        let mut spool = Spool::open(tmp.cfg(1 << 20)).unwrap();
        spool.append(b"two").unwrap();
    }
    let mut spool = Spool::open(tmp.cfg(1 << 20)).unwrap();
    assert_eq!(drain(&mut spool), vec![b"two".to_vec()]);
}
