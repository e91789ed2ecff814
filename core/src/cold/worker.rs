//! Background I/O threads. The main thread hands over a file task and a callback; a worker
//! runs the task off the main thread and calls the callback with the outcome (the shell's
//! callback wakes a blocked client or queues a completion for the timer). No server calls.
//!
//! Tasks are routed by file path, so the operations on one file run in the order they were
//! submitted. A rename or copy touches two files: it runs on the source's thread while the
//! destination's thread waits at a barrier, which keeps per-file order without locks.

use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::thread;

use super::dict::DictStore;
use super::store::{self, AppendOutcome, Store, StoreError};
use crate::conv::message::Message;

pub enum Task {
    Append {
        path: PathBuf,
        key: Vec<u8>,
        session_id: i64,
        /// The file must already hold the turns up to here (see `Store::append`).
        durable_through: u64,
        turns: Vec<Message>,
    },
    Read {
        path: PathBuf,
        session_id: i64,
        archived_last: u64,
        from: u64,
        to: u64,
    },
    Delete {
        path: PathBuf,
    },
    /// An append whose turns are an `encode_more` payload held outside the server's memory
    /// accounting (an evicted session's in-memory turns); answers `Appended`.
    AppendUncounted {
        path: PathBuf,
        key: Vec<u8>,
        session_id: i64,
        durable_through: u64,
        payload: super::uncounted::UncountedBytes,
    },
    /// Writes the record an evicted session leaves beside its archive `path`.
    WriteEvicted {
        path: PathBuf,
        bytes: Vec<u8>,
    },
    /// Removes that record (the session is back in the keyspace).
    DeleteEvicted {
        path: PathBuf,
    },
    Rename {
        from: PathBuf,
        to: PathBuf,
    },
    Copy {
        from: PathBuf,
        to: PathBuf,
    },
    /// Reads a whole file (imports).
    ReadFile {
        path: PathBuf,
    },
    /// Writes a session's archived turns received as commands (AOF replay, slot migration).
    RestoreTurns {
        path: PathBuf,
        key: Vec<u8>,
        session_id: i64,
        turns: Vec<Message>,
    },
    /// Puts an archive received in an RDB on disk unless the local file is complete.
    Restore {
        path: PathBuf,
        bytes: Vec<u8>,
        session_id: i64,
        archived_last: u64,
    },
}

pub enum Outcome {
    Appended(Result<AppendOutcome, StoreError>),
    /// Turns read and the file's size.
    Read(Result<(Vec<Message>, u64), StoreError>),
    Done(Result<bool, StoreError>),
    File(Result<Vec<u8>, StoreError>),
    /// Turns written, and the turns themselves (the caller keeps them if the write failed).
    RestoredTurns(Result<u64, StoreError>, Vec<Message>),
}

pub type Callback = Box<dyn FnOnce(Outcome) + Send>;

/// Restored archives are written in segments of this many turns, so no segment outgrows
/// its 32-bit lengths however long the conversation.
const TURNS_PER_SEGMENT: usize = 1000;

enum Item {
    Run(Task, Callback),
    /// Waits until the paired two-file task on another thread has finished.
    Barrier(Receiver<()>),
}

pub struct Workers {
    queues: Vec<Mutex<Sender<Item>>>,
    /// Tasks submitted and not yet finished (INFO's queue depth).
    pub depth: Arc<AtomicI64>,
}

fn route(path: &std::path::Path, n: usize) -> usize {
    // FNV-1a over the path bytes: stable and cheap.
    let mut h: u64 = 0xcbf29ce484222325;
    for b in path.as_os_str().as_encoded_bytes() {
        h = (h ^ u64::from(*b)).wrapping_mul(0x100000001b3);
    }
    (h % n as u64) as usize
}

impl Workers {
    /// Starts `threads` I/O threads for the archive directory `root`; each first counts the
    /// sizes of the files it owns (INFO's bytes on disk), then runs its tasks.
    pub fn start(threads: usize, root: PathBuf, dicts: Arc<DictStore>) -> Workers {
        let depth = Arc::new(AtomicI64::new(0));
        let n = threads.max(1);
        let queues = (0..n)
            .map(|i| {
                let (tx, rx) = channel::<Item>();
                let depth = depth.clone();
                let dicts = dicts.clone();
                let root = root.clone();
                thread::Builder::new()
                    .name(format!("convcache-io-{i}"))
                    .spawn(move || {
                        store::count_existing(&root, |p| route(p, n) == i);
                        run(rx, depth, dicts)
                    })
                    .expect("spawn archive I/O thread");
                Mutex::new(tx)
            })
            .collect();
        Workers { queues, depth }
    }

    fn send(&self, i: usize, item: Item) {
        let q = self.queues[i].lock().unwrap_or_else(|e| e.into_inner());
        // A worker only stops when its queue is dropped, so the send cannot fail.
        let _ = q.send(item);
    }

    pub fn submit(&self, task: Task, done: Callback) {
        let n = self.queues.len();
        self.depth.fetch_add(1, Ordering::Relaxed);
        match &task {
            Task::Rename { from, to } | Task::Copy { from, to } => {
                let (a, b) = (route(from, n), route(to, n));
                if a != b {
                    let (signal, wait) = channel();
                    self.send(b, Item::Barrier(wait));
                    let done: Callback = Box::new(move |o| {
                        done(o);
                        let _ = signal.send(());
                    });
                    self.send(a, Item::Run(task, done));
                    return;
                }
                self.send(a, Item::Run(task, done));
            }
            Task::Append { path, .. }
            | Task::Read { path, .. }
            | Task::Delete { path }
            | Task::WriteEvicted { path, .. }
            | Task::AppendUncounted { path, .. }
            | Task::DeleteEvicted { path }
            | Task::ReadFile { path }
            | Task::RestoreTurns { path, .. }
            | Task::Restore { path, .. } => {
                let i = route(path, n);
                self.send(i, Item::Run(task, done));
            }
        }
    }
}

/// Appends run back to back, at most this many, before one sync makes them all durable.
const GROUP_MAX: usize = 256;

fn run(rx: Receiver<Item>, depth: Arc<AtomicI64>, dicts: Arc<DictStore>) {
    let mut store = Store::with_dicts(dicts);
    // Appends done but not yet durable, with their callbacks: reported after the group's sync.
    let mut group: Vec<(Outcome, Callback)> = Vec::new();
    loop {
        let item = if group.is_empty() {
            match rx.recv() {
                Ok(item) => item,
                Err(_) => break,
            }
        } else {
            match rx.try_recv() {
                Ok(item) => item,
                Err(TryRecvError::Empty) => {
                    finish_group(&mut store, &mut group, &depth);
                    continue;
                }
                Err(TryRecvError::Disconnected) => break,
            }
        };
        match item {
            Item::Run(task, done) if is_append(&task) => {
                if group.len() >= GROUP_MAX {
                    finish_group(&mut store, &mut group, &depth);
                }
                store.set_defer_sync(true);
                let outcome = execute(&mut store, task);
                group.push((outcome, done));
            }
            other => {
                finish_group(&mut store, &mut group, &depth);
                match other {
                    Item::Barrier(wait) => {
                        let _ = wait.recv();
                    }
                    Item::Run(task, done) => {
                        let outcome = execute(&mut store, task);
                        depth.fetch_sub(1, Ordering::Relaxed);
                        done(outcome);
                    }
                }
            }
        }
    }
    finish_group(&mut store, &mut group, &depth);
}

fn is_append(task: &Task) -> bool {
    matches!(task, Task::Append { .. } | Task::AppendUncounted { .. })
}

/// One sync for the group, then each append is reported: done if it and the sync succeeded.
fn finish_group(store: &mut Store, group: &mut Vec<(Outcome, Callback)>, depth: &AtomicI64) {
    store.set_defer_sync(false);
    if group.is_empty() {
        return;
    }
    let synced = store.sync_group();
    for (outcome, done) in group.drain(..) {
        let outcome = match (outcome, &synced) {
            (Outcome::Appended(Ok(_)), Err(e)) => Outcome::Appended(Err(e.clone())),
            (o, _) => o,
        };
        depth.fetch_sub(1, Ordering::Relaxed);
        done(outcome);
    }
}

fn execute(store: &mut Store, task: Task) -> Outcome {
    match task {
        Task::Append {
            path,
            key,
            session_id,
            durable_through,
            turns,
        } => Outcome::Appended(store.append(&path, &key, session_id, durable_through, &turns)),
        Task::RestoreTurns {
            path,
            key,
            session_id,
            turns,
        } => {
            let result = store.restore_turns(&path, &key, session_id, &turns, TURNS_PER_SEGMENT);
            Outcome::RestoredTurns(result, turns)
        }
        Task::Read {
            path,
            session_id,
            archived_last,
            from,
            to,
        } => Outcome::Read(store::read_turns_with(
            &path,
            store.dicts(),
            session_id,
            archived_last,
            from,
            to,
        )),
        Task::Delete { path } => Outcome::Done(store.delete(&path)),
        Task::AppendUncounted {
            path,
            key,
            session_id,
            durable_through,
            payload,
        } => {
            let turns = match crate::conv::codec::decode(payload.as_slice()) {
                Ok(crate::conv::codec::Decoded::More(turns)) => turns,
                _ => unreachable!("the module encodes these payloads itself"),
            };
            drop(payload);
            execute(
                store,
                Task::Append {
                    path,
                    key,
                    session_id,
                    durable_through,
                    turns,
                },
            )
        }
        Task::WriteEvicted { path, bytes } => Outcome::Done(store.write_evicted(&path, &bytes)),
        Task::DeleteEvicted { path } => Outcome::Done(store.delete_evicted(&path)),
        Task::Rename { from, to } => Outcome::Done(store.rename(&from, &to)),
        Task::Copy { from, to } => Outcome::Done(store.copy(&from, &to)),
        Task::ReadFile { path } => Outcome::File(std::fs::read(path).map_err(StoreError::from)),
        Task::Restore {
            path,
            bytes,
            session_id,
            archived_last,
        } => Outcome::Done(store.restore(&path, &bytes, session_id, archived_last)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    fn turn(seq: u64) -> Message {
        Message {
            seq,
            ts_ms: 1,
            role: "user".into(),
            content: vec![b'x'; 10],
            meta: None,
            emb: None,
            ..Default::default()
        }
    }

    #[test]
    fn per_file_order_holds_across_renames() {
        let root = std::env::temp_dir().join(format!("convcache-worker-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let w = Workers::start(3, root.clone(), Arc::new(DictStore::new(&root)));
        let (tx, rx) = mpsc::channel();
        let a = root.join("0").join("a.huff");
        let b = root.join("0").join("b.huff");
        let t = tx.clone();
        w.submit(
            Task::Append {
                path: a.clone(),
                key: b"a".to_vec(),
                session_id: 1,
                durable_through: 0,
                turns: (1..=3).map(turn).collect(),
            },
            Box::new(move |o| t.send(matches!(o, Outcome::Appended(Ok(_)))).unwrap()),
        );
        let t = tx.clone();
        w.submit(
            Task::Rename {
                from: a.clone(),
                to: b.clone(),
            },
            Box::new(move |o| t.send(matches!(o, Outcome::Done(Ok(true)))).unwrap()),
        );
        let t = tx.clone();
        w.submit(
            Task::Read {
                path: b.clone(),
                session_id: 1,
                archived_last: 3,
                from: 0,
                to: u64::MAX,
            },
            Box::new(move |o| {
                t.send(matches!(o, Outcome::Read(Ok((ref v, _))) if v.len() == 3))
                    .unwrap()
            }),
        );
        for _ in 0..3 {
            assert!(rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap());
        }
        assert!(!a.exists() && b.exists());
        assert_eq!(w.depth.load(Ordering::Relaxed), 0);
        std::fs::remove_dir_all(&root).unwrap();
    }
}
