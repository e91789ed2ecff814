//! The `INFO convcache` section.

use redis_module::InfoContext;

use crate::metrics;

#[allow(deprecated)] // the builder API cannot add a section named after the module alone
pub fn add_info(ctx: &InfoContext, _for_crash_report: bool) {
    ctx.add_info_section(None);
    let written = metrics::ARCHIVE_BYTES_WRITTEN.get();
    let raw = metrics::ARCHIVE_RAW_BYTES_WRITTEN.get();
    let ticks = metrics::TIMER_TICKS.get().max(1);
    let fields: [(&str, i64); 27] = [
        ("sessions", metrics::SESSIONS.get()),
        (
            "hot_sessions",
            metrics::SESSIONS.get() - metrics::COLD_SESSIONS.get(),
        ),
        ("cold_sessions", metrics::COLD_SESSIONS.get()),
        ("archived_turns", metrics::ARCHIVED_TURNS.get()),
        ("archive_writes", metrics::ARCHIVE_WRITES.get()),
        ("archive_reads", metrics::ARCHIVE_READS.get()),
        ("archive_bytes_written", written),
        ("archive_raw_bytes_written", raw),
        ("archive_bytes_read", metrics::ARCHIVE_BYTES_READ.get()),
        ("rehydrations", metrics::REHYDRATIONS.get()),
        ("io_errors", metrics::IO_ERRORS.get()),
        ("io_queue_depth", crate::conv::cold::queue_depth()),
        ("timer_tick_us_max", metrics::TIMER_TICK_US_MAX.get()),
        (
            "timer_tick_us_avg",
            metrics::TIMER_TICK_US_TOTAL.get() / ticks,
        ),
        ("hot_messages", metrics::HOT_MESSAGES.get()),
        ("session_bytes", metrics::SESSION_BYTES.get()),
        ("conv_commands", metrics::CONV_COMMANDS.get()),
        ("conv_adds", metrics::CONV_ADDS.get()),
        ("conv_reads", metrics::CONV_READS.get()),
        ("evicted_sessions", metrics::EVICTED_SESSIONS.get()),
        ("evicted_kept", metrics::EVICTED_KEPT.get()),
        (
            "evicted_turns_written",
            metrics::EVICTED_TURNS_WRITTEN.get(),
        ),
        ("evicted_restored", metrics::EVICTED_RESTORED.get()),
        ("pressure_sessions", metrics::PRESSURE_SESSIONS.get()),
        ("pressure_turns", metrics::PRESSURE_TURNS.get()),
        ("pressure_ticks", metrics::PRESSURE_TICKS.get()),
        ("adds_parked", metrics::ADDS_PARKED.get()),
    ];
    for (name, value) in fields {
        ctx.add_info_field_long_long(name, value);
    }
    // Raw (serialized) bytes per byte written to disk.
    let ratio = if written > 0 {
        raw as f64 / written as f64
    } else {
        0.0
    };
    ctx.add_info_field_str("archive_compression_ratio", &format!("{ratio:.3}"));
    // Bytes written per raw byte: what the disk holds of the content (lower is better).
    let disk_ratio = if raw > 0 {
        written as f64 / raw as f64
    } else {
        0.0
    };
    ctx.add_info_field_str("archive_disk_ratio", &format!("{disk_ratio:.3}"));
    ctx.add_info_field_long_long(
        "archive_disk_bytes",
        crate::cold::store::DISK_BYTES.load(std::sync::atomic::Ordering::Relaxed),
    );
    ctx.add_info_field_str("archive_codec", crate::cold::segcodec::write_codec().name());
    ctx.add_info_field_str("archive_dict_id", &crate::conv::cold::dict_id_text());
    ctx.add_info_field_long_long("archive_dict_trainings", metrics::DICT_TRAININGS.get());
    add_semcache_info(ctx);
}

/// Semantic-cache and embedding-cache fields of `INFO convcache`.
#[allow(deprecated)]
fn add_semcache_info(ctx: &InfoContext) {
    let (hits, misses) = (metrics::SEMCACHE_HITS.get(), metrics::SEMCACHE_MISSES.get());
    let fields: [(&str, i64); 11] = [
        ("semcache_buckets", metrics::SEMCACHE_BUCKETS.get()),
        ("semcache_entries", metrics::SEMCACHE_ENTRIES.get()),
        (
            "semcache_vector_bytes",
            metrics::SEMCACHE_VECTOR_BYTES.get(),
        ),
        ("semcache_lookups", metrics::SEMCACHE_LOOKUPS.get()),
        ("semcache_hits", hits),
        ("semcache_misses", misses),
        (
            "semcache_background_scans",
            metrics::SEMCACHE_BACKGROUND_SCANS.get(),
        ),
        (
            "semcache_index_lookups",
            metrics::SEMCACHE_INDEX_LOOKUPS.get(),
        ),
        ("semcache_prompt_hits", metrics::SEMCACHE_PROMPT_HITS.get()),
        ("urlemb_hits", metrics::URLEMB_HITS.get()),
        ("urlemb_misses", metrics::URLEMB_MISSES.get()),
    ];
    for (name, value) in fields {
        ctx.add_info_field_long_long(name, value);
    }
    let ratio = if hits + misses > 0 {
        hits as f64 / (hits + misses) as f64
    } else {
        0.0
    };
    ctx.add_info_field_str("semcache_hit_ratio", &format!("{ratio:.4}"));
    // Average latency (arrival to reply, background scans included) of hits and misses.
    let avg = |total: i64, n: i64| if n > 0 { total as f64 / n as f64 } else { 0.0 };
    let hit_us = avg(metrics::SEMCACHE_HIT_NSEC.get(), hits) / 1000.0;
    let miss_us = avg(metrics::SEMCACHE_MISS_NSEC.get(), misses) / 1000.0;
    ctx.add_info_field_str("semcache_hit_latency_us", &format!("{hit_us:.1}"));
    ctx.add_info_field_str("semcache_miss_latency_us", &format!("{miss_us:.1}"));
    ctx.add_info_field_str("semcache_simd", crate::vector::simd_level());
}
