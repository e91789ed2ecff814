//! The `INFO convcache` section.

use redis_module::InfoContext;

use crate::metrics;

#[allow(deprecated)] // the builder API cannot add a section named after the module alone
pub fn add_info(ctx: &InfoContext, _for_crash_report: bool) {
    ctx.add_info_section(None);
    let fields: [(&str, i64); 6] = [
        ("sessions", metrics::SESSIONS.get()),
        ("hot_messages", metrics::HOT_MESSAGES.get()),
        ("session_bytes", metrics::SESSION_BYTES.get()),
        ("conv_commands", metrics::CONV_COMMANDS.get()),
        ("conv_adds", metrics::CONV_ADDS.get()),
        ("conv_reads", metrics::CONV_READS.get()),
    ];
    for (name, value) in fields {
        ctx.add_info_field_long_long(name, value);
    }
}
