//! The archive directory's shared zstd dictionaries: `<archive-dir>/dict/<id>.zdict`, content
//! addressed (see [`segcodec::dict_id_of`]), written atomically, never deleted (a segment
//! may name any of them for as long as it exists). Plain `std::fs`; the I/O threads and the
//! trainer thread use it, never the server's main thread.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use super::format;
use super::segcodec::{self, Dict};

/// Largest dictionary accepted from disk (trained ones are 64 KiB).
const MAX_DICT_BYTES: u64 = 4 << 20;

pub struct DictStore {
    root: PathBuf,
    /// Dictionaries read so far, by id. Failures are not kept: a file put back is used.
    loaded: Mutex<HashMap<u64, Arc<Dict>>>,
    /// What new segments are compressed with.
    current: RwLock<Option<Arc<Dict>>>,
}

pub fn file_name(id: u64) -> String {
    format!("{id:016x}.zdict")
}

impl DictStore {
    /// The dictionaries of the archive directory `root`.
    pub fn new(root: &Path) -> DictStore {
        DictStore {
            root: root.to_path_buf(),
            loaded: Mutex::new(HashMap::new()),
            current: RwLock::new(None),
        }
    }

    pub fn dir(&self) -> PathBuf {
        self.root.join("dict")
    }

    pub fn current(&self) -> Option<Arc<Dict>> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn set_current(&self, d: Arc<Dict>) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Some(d);
    }

    /// The dictionary `id`, from memory or its file; the error says what is wrong with it.
    pub fn get(&self, id: u64) -> Result<Arc<Dict>, String> {
        if let Some(d) = self
            .loaded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
        {
            return Ok(d.clone());
        }
        let path = self.dir().join(file_name(id));
        let shown = path.display();
        let bytes = match fs::metadata(&path) {
            Ok(m) if m.len() > MAX_DICT_BYTES => {
                return Err(format!(
                    "archive dictionary {id:016x} is corrupt: {shown} holds {} bytes",
                    m.len()
                ))
            }
            Ok(_) => fs::read(&path),
            Err(e) => Err(e),
        }
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                format!("archive dictionary {id:016x} is missing ({shown})")
            }
            _ => format!("archive dictionary {id:016x} cannot be read ({shown}): {e}"),
        })?;
        if segcodec::dict_id_of(&bytes) != Some(id) {
            return Err(format!(
                "archive dictionary {id:016x} is truncated or corrupt ({shown}: its content does not match its id)"
            ));
        }
        let d = Arc::new(
            Dict::from_bytes(bytes)
                .map_err(|e| format!("archive dictionary {id:016x} is corrupt ({shown}): {e}"))?,
        );
        self.loaded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, d.clone());
        Ok(d)
    }

    /// Writes a new dictionary (temp file, fsync, rename, fsync dir) and makes it current.
    pub fn install(&self, bytes: Vec<u8>) -> Result<Arc<Dict>, String> {
        let d = Arc::new(Dict::from_bytes(bytes)?);
        let dir = self.dir();
        let path = dir.join(file_name(d.id));
        let write = || -> std::io::Result<()> {
            fs::create_dir_all(&dir)?;
            let tmp = dir.join(format!(".{}.tmp", file_name(d.id)));
            {
                let mut f = File::create(&tmp)?;
                f.write_all(&d.bytes)?;
                f.sync_all()?;
            }
            fs::rename(&tmp, &path)?;
            File::open(&dir)?.sync_all()
        };
        write().map_err(|e| format!("writing {}: {e}", path.display()))?;
        self.loaded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(d.id, d.clone());
        self.set_current(d.clone());
        Ok(d)
    }

    /// At start: the newest intact dictionary of the directory becomes current. Returns the
    /// ids of files that could not be used (with why), for the log.
    pub fn load_newest(&self) -> Vec<String> {
        let mut bad = Vec::new();
        let Ok(entries) = fs::read_dir(self.dir()) else {
            return bad;
        };
        let mut found: Vec<(std::time::SystemTime, u64)> = entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let id = u64::from_str_radix(name.strip_suffix(".zdict")?, 16).ok()?;
                let mtime = e.metadata().ok()?.modified().ok()?;
                Some((mtime, id))
            })
            .collect();
        found.sort();
        for (_, id) in found.into_iter().rev() {
            match self.get(id) {
                Ok(d) => {
                    self.set_current(d);
                    break;
                }
                Err(e) => bad.push(e),
            }
        }
        bad
    }

    /// A lookup for [`format::decode_segment_with`].
    pub fn lookup(&self) -> impl Fn(u64) -> Result<Arc<Dict>, String> + '_ {
        move |id| self.get(id)
    }
}

/// Serialized segments of the archive files under `root` (`<root>/<db>/*.huff`), as training
/// samples, until `max_bytes`. Unreadable files and segments are skipped.
pub fn collect_samples(root: &Path, dicts: &DictStore, max_bytes: usize) -> Vec<Vec<u8>> {
    let mut samples = Vec::new();
    let mut total = 0usize;
    let Ok(dbs) = fs::read_dir(root) else {
        return samples;
    };
    for db in dbs.flatten() {
        if !db
            .file_name()
            .to_string_lossy()
            .bytes()
            .all(|b| b.is_ascii_digit())
        {
            continue;
        }
        let Ok(files) = fs::read_dir(db.path()) else {
            continue;
        };
        for f in files.flatten() {
            if !f.file_name().to_string_lossy().ends_with(".huff") {
                continue;
            }
            let Ok(bytes) = fs::read(f.path()) else {
                continue;
            };
            let Ok(sc) = format::scan(&bytes) else {
                continue;
            };
            for seg in &sc.segments {
                if let Ok(raw) = format::decode_segment_raw(&bytes, seg, &dicts.lookup()) {
                    total += raw.len();
                    samples.push(raw);
                    if total >= max_bytes {
                        return samples;
                    }
                }
            }
        }
    }
    samples
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("convcache-dict-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    fn trained() -> Vec<u8> {
        let samples: Vec<Vec<u8>> = (0..300)
            .map(|i| format!("user asks about item {i} of the catalogue; the assistant answers politely about item {}", i % 17).into_bytes())
            .collect();
        segcodec::train(&samples, 2048).unwrap()
    }

    #[test]
    fn installed_dictionaries_are_found_and_damage_is_named() {
        let root = tmpdir("store");
        let st = DictStore::new(&root);
        assert!(st.current().is_none());
        assert!(st.load_newest().is_empty());
        let d = st.install(trained()).unwrap();
        assert_eq!(st.current().unwrap().id, d.id);
        let path = st.dir().join(file_name(d.id));
        assert_eq!(fs::read(&path).unwrap(), d.bytes);
        // A fresh store (restart) picks it up.
        let st2 = DictStore::new(&root);
        assert!(st2.load_newest().is_empty());
        assert_eq!(st2.current().unwrap().id, d.id);
        // Missing, truncated, corrupt: each a clear error for whoever needs it.
        let fresh = || DictStore::new(&root);
        fs::write(&path, &d.bytes[..d.bytes.len() / 2]).unwrap();
        let e = fresh().get(d.id).unwrap_err();
        assert!(e.contains("truncated or corrupt"), "{e}");
        let mut bad = d.bytes.clone();
        bad[100] ^= 0x55;
        fs::write(&path, &bad).unwrap();
        assert!(fresh().get(d.id).unwrap_err().contains("corrupt"));
        let st3 = fresh();
        assert_eq!(st3.load_newest().len(), 1);
        assert!(st3.current().is_none());
        fs::remove_file(&path).unwrap();
        let e = fresh().get(d.id).unwrap_err();
        assert!(e.contains("is missing"), "{e}");
        // Put back, it works again (failures are not remembered).
        fs::write(&path, &d.bytes).unwrap();
        assert!(st3.get(d.id).is_ok());
        fs::remove_dir_all(&root).unwrap();
    }
}
