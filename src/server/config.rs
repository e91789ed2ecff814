//! Every tunable of the module in one place: name, default, range and why.
//! Values live in atomics (or a mutex for strings) so background threads can read them.
//! Registered in `lib.rs` (from the defaults and ranges here); each name is `convcache.<name>` for CONFIG GET/SET and can also be
//! given as a `loadmodule` argument pair (`window 9`).

use std::sync::atomic::{AtomicI64, AtomicU8, Ordering};
use std::sync::Mutex;

use redis_module::configuration::{ConfigurationContext, ConfigurationValue};
use redis_module::{RedisError, RedisString};

use lazy_static::lazy_static;

/// An integer setting: its default and the range CONFIG SET and `loadmodule` arguments accept.
pub struct IntSetting {
    pub default: i64,
    pub min: i64,
    pub max: i64,
}

/// Messages kept in a session's window (lix-open-cache's default: 20).
pub const WINDOW_SETTING: IntSetting = IntSetting {
    default: 20,
    min: 1,
    max: crate::conv::session::MAX_WINDOW as i64,
};
/// Largest content accepted by CONV.ADD; bigger is refused rather than silently truncated.
pub const MAX_CONTENT_SETTING: IntSetting = IntSetting {
    default: 16 * 1024 * 1024,
    min: 1,
    max: 512 * 1024 * 1024,
};
/// Idle seconds before a session moves whole to disk (lix: 2 h).
pub const IDLE_ARCHIVE_SETTING: IntSetting = IntSetting {
    default: 7200,
    min: 0,
    max: 10 * 365 * 86400,
};
/// Retention of cold sessions in days (lix: 14).
pub const ARCHIVE_TTL_DAYS_SETTING: IntSetting = IntSetting {
    default: 14,
    min: 1,
    max: 100 * 365,
};
/// Raw bytes of archived turns before the archive's zstd dictionary is trained (0 = never).
pub const ARCHIVE_DICT_MIN_BYTES_SETTING: IntSetting = IntSetting {
    default: 1 << 20,
    min: 0,
    max: 1 << 40,
};
/// Overflow turns that make one archive append (fewer wait for more, or for idleness).
pub const ARCHIVE_BATCH_SETTING: IntSetting = IntSetting {
    default: 10,
    min: 1,
    max: 1_000_000,
};
/// Largest content CONV.ADD counts exactly (`cl100k_base`, `o200k_base`) on the main thread;
/// a bigger one is counted on a counting thread while its client waits. Counting costs 55-80 ns
/// a byte inside the server: a 16 KiB ADD measured 0.9 ms of main thread (INFO commandstats,
/// ~2 ms on a busy machine), about the most one command should hold it, while chat turns (well
/// under 16 KiB) skip the hand-off and its copies. 0: every exact count off the main thread.
pub const TOKENIZE_INLINE_BYTES_SETTING: IntSetting = IntSetting {
    default: 16 * 1024,
    min: 0,
    max: 512 * 1024 * 1024,
};
pub const IO_THREADS_SETTING: IntSetting = IntSetting {
    default: 2,
    min: 1,
    max: 64,
};
pub const TIMER_INTERVAL_MS_SETTING: IntSetting = IntSetting {
    default: 100,
    min: 1,
    max: 60_000,
};
/// Main-thread time one timer tick may spend choosing and preparing work.
pub const TIMER_BUDGET_US_SETTING: IntSetting = IntSetting {
    default: 1000,
    min: 10,
    max: 1_000_000,
};
/// Main-thread time a tick may spend when work is waiting (overflow batches, memory
/// pressure, finished writes): a quarter of the default interval, so ingest never outgrows
/// the archiver while three quarters of the main thread still serve clients.
pub const TIMER_BACKLOG_BUDGET_US_SETTING: IntSetting = IntSetting {
    default: 25_000,
    min: 10,
    max: 1_000_000,
};
/// Used memory, in percent of `maxmemory`, at which the least recently used sessions start
/// going to disk (the server's own eviction starts at 100%).
pub const PRESSURE_HIGH_SETTING: IntSetting = IntSetting {
    default: 85,
    min: 1,
    max: 100,
};
/// ... and at which they stop.
pub const PRESSURE_LOW_SETTING: IntSetting = IntSetting {
    default: 75,
    min: 1,
    max: 100,
};
/// Entries per semantic-cache bucket (lix: 50).
pub const SEMCACHE_MAX_ITEMS_SETTING: IntSetting = IntSetting {
    default: 50,
    min: 1,
    max: 1_000_000,
};
/// Semantic-cache entry TTL in seconds (lix: 300); 0 = no expiry.
pub const SEMCACHE_TTL_SETTING: IntSetting = IntSetting {
    default: 300,
    min: 0,
    max: 100 * 365 * 86_400,
};
/// Cosine similarity threshold (lix: 0.90).
pub const SEMCACHE_MIN_SIM_DEFAULT: f64 = 0.90;
pub const SEMCACHE_MIN_SIM_DEFAULT_TEXT: &str = "0.90";
/// Archive files, relative to the server's `dir` (next to its RDB and AOF).
pub const ARCHIVE_DIR_DEFAULT: &str = "convcache-archive";
/// Where CONV.IMPORT reads lix-open-cache files, relative to the server's `dir`.
pub const IMPORT_DIR_DEFAULT: &str = "convcache-import";
/// New archive segments: zstd with the directory's trained dictionary (half Huffman's bytes).
pub const ARCHIVE_CODEC_DEFAULT: &str = "zstd";
/// Token counts: the estimate (no vocabulary load) unless an exact tokenizer is chosen.
pub const TOKENIZER_DEFAULT: &str = "estimate";
/// New buckets' index: inverted lists (see docs/semantic-cache.md for why not HNSW).
pub const SEMCACHE_INDEX_ALGO_DEFAULT: &str = "ivf";
/// Above this many bytes of vectors a lookup scans on a background thread.
pub const SEMCACHE_INLINE_BYTES_SETTING: IntSetting = IntSetting {
    default: 4 * 1024 * 1024,
    min: 0,
    max: 1 << 40,
};
/// Entries from which a bucket keeps an HNSW index (0 = never). See README: at 4,096 x 384
/// an exact scan costs about as much as an index lookup, and below it SETs stay cheap.
pub const SEMCACHE_INDEX_MIN_SETTING: IntSetting = IntSetting {
    default: 4096,
    min: 0,
    max: 1_000_000,
};
/// Candidates an index lookup explores (higher: better recall, slower).
pub const SEMCACHE_INDEX_EF_SETTING: IntSetting = IntSetting {
    default: 64,
    min: 1,
    max: 4096,
};
/// Lists an IVF index lookup scans (higher: better recall, slower).
pub const SEMCACHE_INDEX_NPROBE_SETTING: IntSetting = IntSetting {
    default: crate::semcache::ann::DEFAULT_NPROBE as i64,
    min: 1,
    max: 4096,
};
/// URL embedding TTL in seconds (lix: 24 h).
pub const URLEMB_TTL_SETTING: IntSetting = IntSetting {
    default: 86400,
    min: 0,
    max: 100 * 365 * 86_400,
};

lazy_static! {
    pub static ref WINDOW: AtomicI64 = AtomicI64::new(WINDOW_SETTING.default);
    pub static ref MAX_CONTENT_BYTES: AtomicI64 = AtomicI64::new(MAX_CONTENT_SETTING.default);
    pub static ref IDLE_ARCHIVE_SECS: AtomicI64 = AtomicI64::new(IDLE_ARCHIVE_SETTING.default);
    pub static ref ARCHIVE_TTL_DAYS: AtomicI64 = AtomicI64::new(ARCHIVE_TTL_DAYS_SETTING.default);
    pub static ref ARCHIVE_BATCH: AtomicI64 = AtomicI64::new(ARCHIVE_BATCH_SETTING.default);
    pub static ref ARCHIVE_DICT_MIN_BYTES: AtomicI64 =
        AtomicI64::new(ARCHIVE_DICT_MIN_BYTES_SETTING.default);
    pub static ref ARCHIVE_CODEC: CodecConfig = CodecConfig;
    pub static ref TOKENIZE_INLINE_BYTES: AtomicI64 =
        AtomicI64::new(TOKENIZE_INLINE_BYTES_SETTING.default);
    pub static ref TOKENIZER: TokenizerConfig = TokenizerConfig(AtomicU8::new(0));
    pub static ref IO_THREADS: AtomicI64 = AtomicI64::new(IO_THREADS_SETTING.default);
    pub static ref TIMER_BACKLOG_BUDGET_US: AtomicI64 =
        AtomicI64::new(TIMER_BACKLOG_BUDGET_US_SETTING.default);
    pub static ref PRESSURE_HIGH: AtomicI64 = AtomicI64::new(PRESSURE_HIGH_SETTING.default);
    pub static ref PRESSURE_LOW: AtomicI64 = AtomicI64::new(PRESSURE_LOW_SETTING.default);
    pub static ref TIMER_INTERVAL_MS: AtomicI64 = AtomicI64::new(TIMER_INTERVAL_MS_SETTING.default);
    pub static ref TIMER_BUDGET_US: AtomicI64 = AtomicI64::new(TIMER_BUDGET_US_SETTING.default);
    pub static ref ARCHIVE_DIR: Mutex<String> = Mutex::new(ARCHIVE_DIR_DEFAULT.into());
    pub static ref IMPORT_DIR: Mutex<String> = Mutex::new(IMPORT_DIR_DEFAULT.into());
    pub static ref SEMCACHE_MAX_ITEMS: AtomicI64 =
        AtomicI64::new(SEMCACHE_MAX_ITEMS_SETTING.default);
    pub static ref SEMCACHE_TTL_SECS: AtomicI64 = AtomicI64::new(SEMCACHE_TTL_SETTING.default);
    pub static ref SEMCACHE_MIN_SIM: FloatConfig =
        FloatConfig::new(SEMCACHE_MIN_SIM_DEFAULT, -1.0, 1.0);
    pub static ref SEMCACHE_INLINE_BYTES: AtomicI64 =
        AtomicI64::new(SEMCACHE_INLINE_BYTES_SETTING.default);
    pub static ref SEMCACHE_INDEX_MIN: AtomicI64 =
        AtomicI64::new(SEMCACHE_INDEX_MIN_SETTING.default);
    pub static ref SEMCACHE_INDEX_EF: AtomicI64 = AtomicI64::new(SEMCACHE_INDEX_EF_SETTING.default);
    pub static ref SEMCACHE_INDEX_NPROBE: AtomicI64 =
        AtomicI64::new(SEMCACHE_INDEX_NPROBE_SETTING.default);
    pub static ref SEMCACHE_INDEX_ALGO: AlgoConfig = AlgoConfig(AtomicU8::new(0));
    pub static ref URLEMB_TTL_SECS: AtomicI64 = AtomicI64::new(URLEMB_TTL_SETTING.default);
}

/// Reads an integer config from any thread.
pub fn get(v: &AtomicI64) -> i64 {
    v.load(Ordering::Relaxed)
}

pub fn get_string(v: &Mutex<String>) -> String {
    v.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// `archive-codec`: what new archive segments are written with, `zstd` (default) or
/// `huffman` (what releases before codec v2 wrote and read). Every codec is always read.
pub struct CodecConfig;

impl ConfigurationValue<RedisString> for CodecConfig {
    fn get(&self, _ctx: &ConfigurationContext) -> RedisString {
        RedisString::create(None, crate::cold::segcodec::write_codec().name())
    }
    fn set(&self, _ctx: &ConfigurationContext, val: RedisString) -> Result<(), RedisError> {
        let text = val.try_as_str()?;
        match crate::cold::segcodec::Codec::parse(text.trim()) {
            Some(c) => {
                crate::cold::segcodec::set_write_codec(c);
                Ok(())
            }
            None => Err(RedisError::String(format!(
                "archive codec '{text}' is not 'zstd' or 'huffman'"
            ))),
        }
    }
}

/// `tokenizer`: how new sessions count tokens, `estimate` (default: bytes / 4), `cl100k_base`
/// or `o200k_base`. A session keeps the one it started with (see `CONV.ADD ... TOKENIZER`).
pub struct TokenizerConfig(AtomicU8);

impl TokenizerConfig {
    pub fn value(&self) -> crate::conv::tokens::Tokenizer {
        crate::conv::tokens::Tokenizer::from_code(self.0.load(Ordering::Relaxed))
            .unwrap_or_default()
    }
}

impl ConfigurationValue<RedisString> for TokenizerConfig {
    fn get(&self, _ctx: &ConfigurationContext) -> RedisString {
        RedisString::create(None, self.value().name())
    }
    fn set(&self, _ctx: &ConfigurationContext, val: RedisString) -> Result<(), RedisError> {
        let text = val.try_as_str()?;
        match crate::conv::tokens::Tokenizer::parse(text.trim().as_bytes()) {
            Some(t) => {
                self.0.store(t.code(), Ordering::Relaxed);
                // Load the vocabulary now, off the main thread, not at the first CONV.ADD.
                t.warm_in_background();
                Ok(())
            }
            None => Err(RedisError::String(format!(
                "tokenizer '{text}' is not 'estimate', 'cl100k_base' or 'o200k_base'"
            ))),
        }
    }
}

/// `semcache-index-algo`: the index algorithm of new buckets, `ivf` (default) or `hnsw`. A
/// bucket keeps the one it started with (see `SEMCACHE.SET ... ALGO`).
pub struct AlgoConfig(AtomicU8);

impl AlgoConfig {
    pub fn value(&self) -> crate::semcache::ann::Algo {
        crate::semcache::ann::Algo::from_code(self.0.load(Ordering::Relaxed)).unwrap_or_default()
    }
}

impl ConfigurationValue<RedisString> for AlgoConfig {
    fn get(&self, _ctx: &ConfigurationContext) -> RedisString {
        RedisString::create(None, self.value().name())
    }
    fn set(&self, _ctx: &ConfigurationContext, val: RedisString) -> Result<(), RedisError> {
        let text = val.try_as_str()?;
        match crate::semcache::ann::Algo::parse(text.trim().as_bytes()) {
            Some(a) => {
                self.0.store(a.code(), Ordering::Relaxed);
                Ok(())
            }
            None => Err(RedisError::String(format!(
                "index algorithm '{text}' is not 'hnsw' or 'ivf'"
            ))),
        }
    }
}

/// A float setting exposed as a string config (the server has no float configs);
/// CONFIG SET refuses text that is not a number in range.
pub struct FloatConfig {
    bits: std::sync::atomic::AtomicU64,
    min: f64,
    max: f64,
}

impl FloatConfig {
    pub fn new(v: f64, min: f64, max: f64) -> Self {
        FloatConfig {
            bits: std::sync::atomic::AtomicU64::new(v.to_bits()),
            min,
            max,
        }
    }
    pub fn value(&self) -> f64 {
        f64::from_bits(self.bits.load(Ordering::Relaxed))
    }
}

impl ConfigurationValue<RedisString> for FloatConfig {
    fn get(&self, _ctx: &ConfigurationContext) -> RedisString {
        RedisString::create(None, format!("{}", self.value()).as_str())
    }
    fn set(&self, _ctx: &ConfigurationContext, val: RedisString) -> Result<(), RedisError> {
        let text = val.try_as_str()?;
        match text.trim().parse::<f64>() {
            Ok(v) if v.is_finite() && v >= self.min && v <= self.max => {
                self.bits.store(v.to_bits(), Ordering::Relaxed);
                Ok(())
            }
            // No "ERR" here: the server puts its own "ERR CONFIG SET failed ..." before it.
            _ => Err(RedisError::String(format!(
                "value '{text}' is not a number between {} and {}",
                self.min, self.max
            ))),
        }
    }
}
