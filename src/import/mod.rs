//! CONV.IMPORT: a lix-open-cache archive read into a new session. The file is read and
//! parsed on an I/O thread; the main thread only installs the session and replicates the
//! session itself (`CONV._LOAD`), never the file name. The readers live in the core crate's
//! `import`.
pub use convcache_core::import::*;

use std::path::PathBuf;

use redis_module::{Context, NotifyEvent, RedisError, RedisResult, RedisString, RedisValue};

use crate::clock::{now_ms, random_id};
use crate::cold::filename::is_safe_import_name;
use crate::conv::codec;
use crate::conv::cold;
use crate::conv::commands::LOAD_COMMAND;
use crate::conv::r#type::SESSION_TYPE;
use crate::conv::session::Session;
use crate::conv::turn::Turn;
use crate::metrics;
use crate::server::{blocking, config};
use lix::read_cav1;

/// CONV.IMPORT key name: imports `<import-dir>/<name>.huff`, a lix_open_cache `CAv1`
/// archive, into a new session `key`. Replies the number of turns imported.
pub fn import_cmd(ctx: &Context, argv: &[RedisString]) -> RedisResult {
    metrics::CONV_COMMANDS.incr();
    if argv.len() != 3 {
        return Err(RedisError::WrongArity);
    }
    let name = argv[2].as_slice();
    if !is_safe_import_name(name) {
        return Err(RedisError::String(format!(
            "ERR import name '{}' must be a plain file name (no path separators, at most 200 bytes)",
            String::from_utf8_lossy(name)
        )));
    }
    let key = ctx.open_key(&argv[1]);
    if !key.is_null() {
        return Err(RedisError::Str("ERR target key already exists"));
    }
    drop(key);
    let mut file = name.to_vec();
    file.extend_from_slice(b".huff");
    let path = PathBuf::from(config::get_string(&config::IMPORT_DIR))
        .join(String::from_utf8_lossy(&file).as_ref());
    let bc = blocking::block(ctx, "CONV.IMPORT")?;
    let key_name = argv[1].as_slice().to_vec();
    let shown = String::from_utf8_lossy(&file).into_owned();
    cold::read_file(
        path,
        Box::new(move |bytes| {
            // Parse off the main thread; the main thread only installs the session.
            let parsed = bytes
                .map_err(|e| format!("ERR cannot read import file '{shown}': {e}"))
                .and_then(|b| read_cav1(&b).map_err(|e| format!("ERR import file '{shown}': {e}")));
            let session = parsed.and_then(|lix| {
                // Counted here, on the I/O thread, with the config's tokenizer, which the
                // session keeps (the replicated `_LOAD` payload carries both).
                session_from_lix(
                    lix,
                    config::get(&config::WINDOW) as u32,
                    config::TOKENIZER.value(),
                    random_id(),
                )
                .map_err(|e| format!("ERR import file '{shown}': {e}"))
            });
            bc.finish(Box::new(move |ctx| {
                install_import(ctx, &key_name, session.map_err(RedisError::String)?)
            }));
        }),
    );
    Ok(RedisValue::NoReply)
}

fn install_import(ctx: &Context, key_name: &[u8], s: Session) -> RedisResult {
    let name = RedisString::create_from_slice(ctx.ctx, key_name);
    let key = ctx.open_key_writable(&name);
    if !key.is_empty() {
        return Err(RedisError::Str("ERR target key already exists"));
    }
    // Imported history is not idle history: the clock starts now.
    s.touch(now_ms());
    let n = s.total_len();
    let all: Vec<Turn> = s.turns().collect();
    let payload = codec::encode_session(&s, &all);
    metrics::session_created(&s);
    key.set_value(&SESSION_TYPE, s)?;
    // Replicas and the AOF get the imported session itself, not the file name.
    let payload = RedisString::create_from_slice(ctx.ctx, &payload);
    ctx.replicate(LOAD_COMMAND, &[&name, &payload][..]);
    ctx.notify_keyspace_event(NotifyEvent::MODULE, "conv.import", &name);
    Ok(RedisValue::Integer(n as i64))
}
