//! Archive files on disk: where a session's file lives and the durable operations on it.
//! Plain `std::fs`, no server calls; only the I/O worker threads call this (never the
//! server's main thread).
//!
//! A file is `<archive-dir>/<db>/<archive_file_name(key)>`. Appends are idempotent: only
//! turns past the file's last sequence number are written, so a job replayed after a crash
//! never duplicates a turn. The file header names the key and the session's random id;
//! a file left by an earlier session of the same key (deleted, flushed) is replaced, never
//! mixed with the new one.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::dict::DictStore;
use super::filename::archive_file_name;
use super::format::{self, ArchiveScan};
use crate::conv::message::Message;

#[derive(Debug, Clone)]
pub enum StoreError {
    Io(String),
    Corrupt(String),
    /// A dictionary the file needs is missing, truncated or corrupt.
    Dictionary(String),
    /// The file belongs to another session (another key or incarnation).
    Foreign,
    /// The archive lacks turns the session counts as archived.
    Missing {
        want_last: u64,
        have_last: u64,
    },
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Io(e) => write!(f, "archive I/O error: {e}"),
            StoreError::Corrupt(e) => write!(f, "archive file is corrupt: {e}"),
            StoreError::Dictionary(e) => write!(f, "{e}"),
            StoreError::Foreign => write!(f, "archive file belongs to another session"),
            StoreError::Missing { want_last, have_last } => write!(
                f,
                "archive file is missing turns (has up to seq {have_last}, session archived up to {want_last})"
            ),
        }
    }
}

impl From<std::io::Error> for StoreError {
    fn from(e: std::io::Error) -> Self {
        StoreError::Io(e.to_string())
    }
}

/// What the writer knows of a file without reading it again.
#[derive(Debug, Clone, Copy)]
struct FileState {
    valid_len: u64,
    last_seq: u64,
    session_id: i64,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct AppendOutcome {
    pub turns_written: u64,
    pub bytes_written: u64,
    /// Serialized (uncompressed) size of the turns written.
    pub raw_bytes: u64,
}

/// Bytes of the archive files on disk (INFO `archive_disk_bytes`): counted once per file when
/// the I/O threads start ([`count_existing`]), then moved by every write, cut, copy, rename
/// and delete, all of which run on the I/O thread that owns the file.
pub static DISK_BYTES: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);

fn disk_add(n: i64) {
    DISK_BYTES.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
}

/// Size of the file at `path`, 0 if there is none.
fn file_len(path: &Path) -> i64 {
    fs::metadata(path).map_or(0, |m| m.len() as i64)
}

/// Adds the sizes of the archive files under `root` (`<root>/<db>/*.huff`) that `mine`
/// accepts (each I/O thread counts the files it owns, before it runs any task on them).
pub fn count_existing(root: &Path, mine: impl Fn(&Path) -> bool) {
    let Ok(dbs) = fs::read_dir(root) else {
        return;
    };
    for db in dbs.flatten() {
        let name = db.file_name();
        if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(files) = fs::read_dir(db.path()) else {
            continue;
        };
        for f in files.flatten() {
            let path = f.path();
            let name = f.file_name();
            let name = name.to_string_lossy();
            if name.ends_with(".huff") && !name.starts_with('.') && mine(&path) {
                disk_add(f.metadata().map_or(0, |m| m.len() as i64));
            }
        }
    }
}

pub fn session_path(root: &Path, db: i32, key: &[u8]) -> PathBuf {
    root.join(db.to_string()).join(archive_file_name(key))
}

/// A group of at least this many files is made durable by one `syncfs`.
const SYNCFS_FILES: usize = 16;

/// The writer side. Holds per-file state so an append costs O(new turns), not a re-read.
#[derive(Default)]
pub struct Store {
    files: HashMap<PathBuf, FileState>,
    /// The archive directory's dictionaries (none: zstd segments without one).
    dicts: Option<Arc<DictStore>>,
    /// Group commit: appends skip their own fsyncs, and [`Store::sync_group`] makes them all
    /// durable, back to back, before any of them is reported done.
    defer_sync: bool,
    /// Files (and new files' directories) written since the last sync.
    unsynced: HashMap<PathBuf, Option<File>>,
    unsynced_dirs: Vec<PathBuf>,
}

impl Store {
    pub fn new() -> Store {
        Store::default()
    }

    pub fn with_dicts(dicts: Arc<DictStore>) -> Store {
        Store {
            dicts: Some(dicts),
            ..Store::default()
        }
    }

    /// Appends from now on wait for [`Store::sync_group`] to be durable (or not).
    pub fn set_defer_sync(&mut self, on: bool) {
        self.defer_sync = on;
    }

    /// Makes every write since the last call durable. A small group: each file's data, then
    /// each new file's directory, back to back. A big one (a write storm, memory pressure):
    /// one `syncfs` of the archive's file system, a single journal commit for all of them
    /// (one `fdatasync` per file, each waiting for its own commit, was the archiver's limit).
    /// `syncfs` also waits for the file system's other writers (an RDB being saved): that
    /// delays archiving, never the main thread. On failure what the cache learned is
    /// dropped, so the next append re-reads the file.
    pub fn sync_group(&mut self) -> Result<(), StoreError> {
        let files = std::mem::take(&mut self.unsynced);
        let dirs = std::mem::take(&mut self.unsynced_dirs);
        let synced = if files.len() >= SYNCFS_FILES {
            let any = files.keys().next().expect("a big group has files");
            File::open(any).and_then(|f| {
                use std::os::fd::AsRawFd;
                // SAFETY: a plain system call on a descriptor this function owns.
                match unsafe { libc::syncfs(f.as_raw_fd()) } {
                    0 => Ok(()),
                    _ => Err(std::io::Error::last_os_error()),
                }
            })
        } else {
            files
                .into_iter()
                .try_for_each(|(p, f)| match f {
                    Some(f) => f.sync_data(),
                    None => OpenOptions::new().write(true).open(p)?.sync_data(),
                })
                .and_then(|_| dirs.iter().try_for_each(|d| File::open(d)?.sync_all()))
        };
        if let Err(e) = synced {
            self.files.clear();
            return Err(e.into());
        }
        Ok(())
    }

    fn note_unsynced(&mut self, path: &Path, file: Option<File>, new_file: bool) {
        match self.unsynced.get_mut(path) {
            Some(held) => {
                if held.is_none() {
                    *held = file;
                }
            }
            None => {
                self.unsynced.insert(path.to_path_buf(), file);
            }
        }
        if let Some(dir) = path.parent().filter(|_| new_file) {
            if !self.unsynced_dirs.iter().any(|d| d == dir) {
                self.unsynced_dirs.push(dir.to_path_buf());
            }
        }
    }

    pub fn dicts(&self) -> Option<&DictStore> {
        self.dicts.as_deref()
    }

    /// Appends the turns past the file's last sequence and makes them durable (fsync; the
    /// directory too when the file is new). `turns` ascend by seq. The file must already hold
    /// every turn up to `durable_through` (what the session counts as archived): appending
    /// after a gap would leave the missing turns out of the file for good.
    pub fn append(
        &mut self,
        path: &Path,
        key: &[u8],
        session_id: i64,
        durable_through: u64,
        turns: &[Message],
    ) -> Result<AppendOutcome, StoreError> {
        let state = match self.files.get(path) {
            Some(s) if s.session_id == session_id => *s,
            _ => self.open_state(path, key, session_id)?,
        };
        if state.last_seq < durable_through {
            return Err(StoreError::Missing {
                want_last: durable_through,
                have_last: state.last_seq,
            });
        }
        // `turns` ascend by seq: the new ones are a tail of it (no copy).
        let skip = turns.partition_point(|t| t.seq <= state.last_seq);
        let new = &turns[skip..];
        if new.is_empty() {
            return Ok(AppendOutcome::default());
        }
        let dict = self.dicts.as_ref().and_then(|d| d.current());
        let (segment, raw_bytes) =
            format::encode_segment_with(new, super::segcodec::write_codec(), dict.as_deref())
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let raw_bytes = raw_bytes as u64;
        let mut f = OpenOptions::new().write(true).open(path)?;
        let before = f.metadata()?.len() as i64;
        // A torn tail from a crash mid-append is cut off before writing after it.
        f.set_len(state.valid_len)?;
        disk_add(state.valid_len as i64 - before);
        f.seek(SeekFrom::Start(state.valid_len))?;
        let defer = self.defer_sync;
        let written = f
            .write_all(&segment)
            .and_then(|_| if defer { Ok(()) } else { f.sync_data() });
        if let Err(e) = written {
            self.files.remove(path);
            disk_add(file_len(path) - state.valid_len as i64);
            return Err(e.into());
        }
        if defer {
            self.note_unsynced(path, Some(f), false);
        }
        disk_add(segment.len() as i64);
        let last_seq = new.last().map_or(state.last_seq, |t| t.seq);
        self.files.insert(
            path.to_path_buf(),
            FileState {
                valid_len: state.valid_len + segment.len() as u64,
                last_seq,
                session_id,
            },
        );
        Ok(AppendOutcome {
            turns_written: new.len() as u64,
            bytes_written: segment.len() as u64,
            raw_bytes,
        })
    }

    /// Reads (or creates) the file and learns its valid length and last sequence.
    fn open_state(
        &mut self,
        path: &Path,
        key: &[u8],
        session_id: i64,
    ) -> Result<FileState, StoreError> {
        let existing = match fs::read(path) {
            Ok(bytes) => Some(bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e.into()),
        };
        if let Some(bytes) = existing {
            if let Ok(scan) = format::scan(&bytes) {
                // The session id identifies the session; the key in the header is the one it
                // had when the file was made (RENAME and COPY carry files to new names).
                if scan.header.session_id == session_id {
                    if scan.resync_offset.is_some() {
                        return Err(StoreError::Corrupt(format!(
                            "damaged segment in the middle of {}; refusing to append after it",
                            path.display()
                        )));
                    }
                    return Ok(FileState {
                        valid_len: scan.valid_len as u64,
                        last_seq: scan.last_seq().unwrap_or(0),
                        session_id,
                    });
                }
            }
            // Another session's file (or an unreadable header): start over in its place.
        }
        let header = format::encode_header(key, session_id);
        let dir = path.parent().expect("archive paths have a parent");
        fs::create_dir_all(dir)?;
        let tmp = dir.join(format!(
            ".{}.tmp",
            path.file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("archive")
        ));
        {
            let mut f = File::create(&tmp)?;
            f.write_all(&header)?;
            if !self.defer_sync {
                f.sync_all()?;
            }
        }
        let old = file_len(path);
        fs::rename(&tmp, path)?;
        disk_add(header.len() as i64 - old);
        if self.defer_sync {
            // A crash before the group's sync may leave an empty file under this name: no
            // header, so the next append starts it over (its turns never left memory).
            self.note_unsynced(path, None, true);
        } else {
            File::open(dir)?.sync_all()?;
        }
        Ok(FileState {
            valid_len: header.len() as u64,
            last_seq: 0,
            session_id,
        })
    }

    pub fn delete(&mut self, path: &Path) -> Result<bool, StoreError> {
        self.files.remove(path);
        self.delete_evicted(path)?;
        let old = file_len(path);
        match fs::remove_file(path) {
            Ok(()) => {
                disk_add(-old);
                Ok(true)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Writes the record of an evicted session beside its archive `path`, durably: a new
    /// file fsynced and renamed over the old one, so a crash leaves the old or the new.
    pub fn write_evicted(&mut self, path: &Path, bytes: &[u8]) -> Result<bool, StoreError> {
        use std::io::Write;
        let dest = super::evicted::record_path(path);
        if let Some(dir) = dest.parent() {
            fs::create_dir_all(dir)?;
        }
        let mut tmp = dest.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, &dest)?;
        Ok(true)
    }

    /// Removes the record of an evicted session (it is back, or deleted).
    pub fn delete_evicted(&mut self, path: &Path) -> Result<bool, StoreError> {
        match fs::remove_file(super::evicted::record_path(path)) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Every evicted session's record under `root` (`<root>/<db>/*.evicted`), for the
    /// module's start; records that do not decode are reported, not returned.
    pub fn evicted_records(root: &Path) -> (Vec<super::evicted::EvictedRecord>, Vec<String>) {
        let (mut found, mut bad) = (Vec::new(), Vec::new());
        let Ok(dbs) = fs::read_dir(root) else {
            return (found, bad);
        };
        for db in dbs.flatten() {
            let Ok(files) = fs::read_dir(db.path()) else {
                continue;
            };
            for f in files.flatten() {
                let p = f.path();
                if !p.to_string_lossy().ends_with(super::evicted::SUFFIX) {
                    continue;
                }
                match fs::read(&p)
                    .map_err(|e| e.to_string())
                    .and_then(|b| super::evicted::decode(&b))
                {
                    Ok(r) => found.push(r),
                    Err(e) => bad.push(format!("{}: {e}", p.display())),
                }
            }
        }
        (found, bad)
    }

    /// Moves a session's file with its key (RENAME, MOVE). The header keeps naming the
    /// original key; readers check the session id, which a rename keeps.
    pub fn rename(&mut self, from: &Path, to: &Path) -> Result<bool, StoreError> {
        self.files.remove(from);
        self.files.remove(to);
        if let Some(dir) = to.parent() {
            fs::create_dir_all(dir)?;
        }
        let replaced = file_len(to);
        match fs::rename(from, to) {
            Ok(()) => {
                disk_add(-replaced);
                Ok(true)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Copies a session's file for COPY.
    pub fn copy(&mut self, from: &Path, to: &Path) -> Result<bool, StoreError> {
        let bytes = match fs::read(from) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e.into()),
        };
        self.replace(to, &bytes)?;
        Ok(true)
    }

    /// Writes `bytes` as the whole file, atomically (temp file, fsync, rename, fsync dir).
    fn replace(&mut self, path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
        self.files.remove(path);
        let dir = path.parent().expect("archive paths have a parent");
        fs::create_dir_all(dir)?;
        let tmp = dir.join(format!(
            ".{}.tmp",
            path.file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("archive")
        ));
        {
            let mut f = File::create(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
        }
        let old = file_len(path);
        fs::rename(&tmp, path)?;
        disk_add(bytes.len() as i64 - old);
        File::open(dir)?.sync_all()?;
        Ok(())
    }

    /// Archived turns that came as commands (AOF replay, slot migration), all of a session's,
    /// ascending: written in segments of at most `per_segment` turns, skipping what this
    /// node's file of the same session already holds. Returns the turns written.
    pub fn restore_turns(
        &mut self,
        path: &Path,
        key: &[u8],
        session_id: i64,
        turns: &[Message],
        per_segment: usize,
    ) -> Result<u64, StoreError> {
        let mut written = 0;
        for part in turns.chunks(per_segment.max(1)) {
            written += self.append(path, key, session_id, 0, part)?.turns_written;
        }
        Ok(written)
    }

    /// An archive that came with an RDB (full sync, RESTORE, restart): written unless this
    /// node's file of the same session already reaches `archived_last`.
    pub fn restore(
        &mut self,
        path: &Path,
        bytes: &[u8],
        session_id: i64,
        archived_last: u64,
    ) -> Result<bool, StoreError> {
        if let Ok(local) = fs::read(path) {
            if let Ok(scan) = format::scan(&local) {
                if scan.header.session_id == session_id
                    && scan.last_seq().unwrap_or(0) >= archived_last
                {
                    return Ok(false);
                }
            }
        }
        self.replace(path, bytes)?;
        Ok(true)
    }
}

/// Reads the archived turns with `from <= seq <= to` of a session created at `session_id`.
/// Turns past `archived_last` (written but not yet acknowledged as archived) are left out,
/// so a file never shows a turn twice next to the in-memory ones.
pub fn read_turns(
    path: &Path,
    session_id: i64,
    archived_last: u64,
    from: u64,
    to: u64,
) -> Result<(Vec<Message>, u64), StoreError> {
    read_turns_with(path, None, session_id, archived_last, from, to)
}

/// The error of a segment that did not decode: a dictionary problem is named as such.
pub fn segment_error(e: super::ArchiveError) -> StoreError {
    match e {
        super::ArchiveError::Dictionary { .. } => StoreError::Dictionary(e.to_string()),
        e => StoreError::Corrupt(e.to_string()),
    }
}

/// [`read_turns`] with the archive directory's dictionaries.
pub fn read_turns_with(
    path: &Path,
    dicts: Option<&DictStore>,
    session_id: i64,
    archived_last: u64,
    from: u64,
    to: u64,
) -> Result<(Vec<Message>, u64), StoreError> {
    let lookup = |id| match dicts {
        Some(d) => d.get(id),
        None => format::no_dicts(id),
    };
    let mut bytes = Vec::new();
    File::open(path)?.read_to_end(&mut bytes)?;
    let scan: ArchiveScan = format::scan(&bytes).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    if scan.header.session_id != session_id {
        return Err(StoreError::Foreign);
    }
    let have_last = scan.last_seq().unwrap_or(0);
    if have_last < archived_last.min(to) {
        // Damage, not a short file: name the segment, its offset and the check that failed.
        if let Some(why) = scan.tail_reason {
            return Err(StoreError::Corrupt(format!(
                "{why} (turns after seq {have_last} are unreadable; session archived up to {archived_last})"
            )));
        }
        return Err(StoreError::Missing {
            want_last: archived_last,
            have_last,
        });
    }
    let to = to.min(archived_last);
    let mut out = Vec::new();
    for seg in scan
        .segments
        .iter()
        .filter(|s| s.last_seq >= from && s.first_seq <= to)
    {
        let turns =
            format::decode_session_segment_with(&bytes, seg, &lookup).map_err(segment_error)?;
        out.extend(turns.into_iter().filter(|t| t.seq >= from && t.seq <= to));
    }
    Ok((out, bytes.len() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn turn(seq: u64) -> Message {
        Message {
            seq,
            ts_ms: seq as i64 * 10,
            role: "user".into(),
            content: format!("turn {seq}").into_bytes(),
            meta: None,
            emb: None,
            ..Default::default()
        }
    }

    fn turns(r: std::ops::RangeInclusive<u64>) -> Vec<Message> {
        r.map(turn).collect()
    }

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("convcache-store-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn appends_are_idempotent_and_reads_filter_by_range() {
        let root = tmpdir("idem");
        let p = session_path(&root, 0, b"k");
        let mut st = Store::new();
        assert_eq!(
            st.append(&p, b"k", 7, 0, &turns(1..=5))
                .unwrap()
                .turns_written,
            5
        );
        // A replayed job with overlap writes only the new turns.
        assert_eq!(
            st.append(&p, b"k", 7, 0, &turns(3..=8))
                .unwrap()
                .turns_written,
            3
        );
        // A fresh writer (after a restart) learns the state from the file.
        let mut st2 = Store::new();
        assert_eq!(
            st2.append(&p, b"k", 7, 0, &turns(1..=8))
                .unwrap()
                .turns_written,
            0
        );
        let (got, _) = read_turns(&p, 7, 8, 0, u64::MAX).unwrap();
        assert_eq!(got, turns(1..=8));
        let (got, _) = read_turns(&p, 7, 6, 2, 100).unwrap();
        assert_eq!(got, turns(2..=6));
        assert!(matches!(
            read_turns(&p, 8, 8, 0, 9),
            Err(StoreError::Foreign)
        ));
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn torn_tail_is_cut_before_the_next_append() {
        let root = tmpdir("torn");
        let p = session_path(&root, 0, b"k");
        let mut st = Store::new();
        st.append(&p, b"k", 1, 0, &turns(1..=3)).unwrap();
        let good = fs::metadata(&p).unwrap().len();
        st.append(&p, b"k", 1, 0, &turns(4..=6)).unwrap();
        // Simulate a crash halfway through the second segment.
        let f = OpenOptions::new().write(true).open(&p).unwrap();
        f.set_len(good + 10).unwrap();
        let mut st = Store::new();
        let (got, _) = read_turns(&p, 1, 3, 0, u64::MAX).unwrap();
        assert_eq!(got, turns(1..=3));
        assert_eq!(
            st.append(&p, b"k", 1, 0, &turns(4..=7))
                .unwrap()
                .turns_written,
            4
        );
        assert_eq!(read_turns(&p, 1, 7, 0, u64::MAX).unwrap().0, turns(1..=7));
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_new_incarnation_replaces_a_stale_file() {
        let root = tmpdir("stale");
        let p = session_path(&root, 0, b"k");
        let mut st = Store::new();
        st.append(&p, b"k", 1, 0, &turns(1..=9)).unwrap();
        let mut st = Store::new();
        assert_eq!(
            st.append(&p, b"k", 2, 0, &turns(1..=2))
                .unwrap()
                .turns_written,
            2
        );
        assert_eq!(read_turns(&p, 2, 2, 0, u64::MAX).unwrap().0, turns(1..=2));
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn restore_keeps_a_complete_local_file_and_replaces_an_incomplete_one() {
        let root = tmpdir("restore");
        let (p, q) = (
            session_path(&root, 0, b"k"),
            session_path(&root, 0, b"other"),
        );
        let mut st = Store::new();
        st.append(&p, b"k", 1, 0, &turns(1..=4)).unwrap();
        let full = fs::read(&p).unwrap();
        assert!(!st.restore(&p, b"ignored", 1, 4).unwrap());
        assert!(st.restore(&q, &full, 1, 4).unwrap());
        assert_eq!(read_turns(&q, 1, 4, 0, u64::MAX).unwrap().0, turns(1..=4));
        // Appends continue after a restored file.
        assert_eq!(
            st.append(&q, b"other", 1, 0, &turns(1..=6))
                .unwrap()
                .turns_written,
            2
        );
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn an_append_after_a_gap_is_refused() {
        let root = tmpdir("gap");
        let p = session_path(&root, 0, b"k");
        let mut st = Store::new();
        st.append(&p, b"k", 1, 0, &turns(1..=3)).unwrap();
        // The session counts turns up to 5 as archived, the file stops at 3: writing 6.. now
        // would hide 4 and 5 for good.
        assert!(matches!(
            st.append(&p, b"k", 1, 5, &turns(6..=7)),
            Err(StoreError::Missing {
                want_last: 5,
                have_last: 3
            })
        ));
        assert_eq!(read_turns(&p, 1, 3, 0, u64::MAX).unwrap().0, turns(1..=3));
        // A new file for a session that counts archived turns is refused the same way.
        let q = session_path(&root, 0, b"fresh");
        assert!(Store::new()
            .append(&q, b"fresh", 1, 2, &turns(3..=3))
            .is_err());
        assert_eq!(
            st.append(&p, b"k", 1, 3, &turns(1..=5))
                .unwrap()
                .turns_written,
            2
        );
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn restored_turns_fill_a_new_file_in_segments_and_skip_what_is_there() {
        let root = tmpdir("restore-turns");
        let p = session_path(&root, 0, b"k");
        let mut st = Store::new();
        assert_eq!(
            st.restore_turns(&p, b"k", 4, &turns(1..=10), 3).unwrap(),
            10
        );
        let bytes = fs::read(&p).unwrap();
        assert_eq!(format::scan(&bytes).unwrap().segments.len(), 4);
        assert_eq!(read_turns(&p, 4, 10, 0, u64::MAX).unwrap().0, turns(1..=10));
        // The same archive again (an AOF replayed on the node that wrote it): nothing written.
        assert_eq!(
            Store::new()
                .restore_turns(&p, b"k", 4, &turns(1..=10), 3)
                .unwrap(),
            0
        );
        assert_eq!(fs::read(&p).unwrap(), bytes);
        // A partial file of the session is completed; another session's file is replaced.
        let q = session_path(&root, 0, b"q");
        Store::new().append(&q, b"q", 4, 0, &turns(1..=4)).unwrap();
        assert_eq!(
            Store::new()
                .restore_turns(&q, b"q", 4, &turns(1..=10), 100)
                .unwrap(),
            6
        );
        assert_eq!(
            Store::new()
                .restore_turns(&q, b"q", 5, &turns(2..=3), 100)
                .unwrap(),
            2
        );
        assert_eq!(read_turns(&q, 5, 3, 0, u64::MAX).unwrap().0, turns(2..=3));
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn missing_turns_are_an_error() {
        let root = tmpdir("missing");
        let p = session_path(&root, 0, b"k");
        Store::new().append(&p, b"k", 1, 0, &turns(1..=3)).unwrap();
        assert!(matches!(
            read_turns(&p, 1, 5, 0, u64::MAX),
            Err(StoreError::Missing { .. })
        ));
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_damaged_segment_is_named_not_called_missing_turns() {
        let root = tmpdir("damaged");
        let p = session_path(&root, 0, b"k");
        let mut st = Store::new();
        st.append(&p, b"k", 1, 0, &turns(1..=3)).unwrap();
        st.append(&p, b"k", 1, 3, &turns(4..=6)).unwrap();
        let mut bytes = fs::read(&p).unwrap();
        let header_len = format::read_header(&bytes).unwrap().1;
        bytes[header_len + 60] ^= 0x40; // in the first segment's payload (after a 52-byte SEG2 header)
        fs::write(&p, &bytes).unwrap();
        let e = read_turns(&p, 1, 6, 0, u64::MAX).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!(
                "archive file is corrupt: segment 0 at offset {header_len}: segment payload CRC32 mismatch (stored 0x"
            )),
            "{e}"
        );
        assert!(
            e.ends_with("(turns after seq 0 are unreadable; session archived up to 6)"),
            "{e}"
        );
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn hostile_keys_stay_inside_the_root() {
        let root = tmpdir("hostile");
        for key in [
            &b"../../etc/passwd"[..],
            b"/abs",
            b"..",
            b"a\0b",
            &[0xff; 600],
        ] {
            let p = session_path(&root, 3, key);
            assert_eq!(p.parent().unwrap(), root.join("3"));
            Store::new().append(&p, key, 1, 0, &turns(1..=1)).unwrap();
            assert!(p.exists());
        }
        fs::remove_dir_all(&root).unwrap();
    }
}
