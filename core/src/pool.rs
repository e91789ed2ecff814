//! Small pools of CPU threads for work kept off the main thread (semcache scans of big
//! buckets, token counts of big contents). Each pool has one fewer thread than the cores (the
//! main thread keeps one), 1 to 4, started at its first job; apart from the archive's I/O
//! threads, so CPU work never delays a disk write. Pure std: no server calls.

use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex, OnceLock};

pub type Job = Box<dyn FnOnce() + Send>;

/// A named pool; a `static` holds it and its threads live as long as the process.
pub struct Pool {
    name: &'static str,
    queue: OnceLock<Mutex<Sender<Job>>>,
}

impl Pool {
    pub const fn new(name: &'static str) -> Pool {
        Pool {
            name,
            queue: OnceLock::new(),
        }
    }

    /// Runs `job` on one of the pool's threads, in the order jobs arrive.
    pub fn submit(&self, job: Job) {
        let queue = self.queue.get_or_init(|| {
            let (tx, rx) = channel::<Job>();
            let rx = Arc::new(Mutex::new(rx));
            let threads = std::thread::available_parallelism()
                .map_or(1, |n| n.get().saturating_sub(1))
                .clamp(1, 4);
            for i in 0..threads {
                let rx = Arc::clone(&rx);
                std::thread::Builder::new()
                    .name(format!("{}-{i}", self.name))
                    .spawn(move || loop {
                        // The receiver is locked only to take a job, not while it runs.
                        let job = match rx.lock() {
                            Ok(rx) => rx.recv(),
                            Err(_) => return,
                        };
                        match job {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    })
                    .expect("spawn a pool thread");
            }
            Mutex::new(tx)
        });
        let tx = queue.lock().unwrap_or_else(|e| e.into_inner());
        // The receivers live as long as the process: sending cannot fail.
        let _ = tx.send(job);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_every_job() {
        static POOL: Pool = Pool::new("test-pool");
        let (tx, rx) = channel();
        for i in 0..20 {
            let tx = tx.clone();
            POOL.submit(Box::new(move || tx.send(i).unwrap()));
        }
        let mut got: Vec<i32> = rx.iter().take(20).collect();
        got.sort();
        assert_eq!(got, (0..20).collect::<Vec<_>>());
    }
}
