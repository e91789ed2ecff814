//! lix-open-cache archives, read for `CONV.IMPORT`: the `CAv1` container ([`lix`]) and its
//! legacy `HCv1` Huffman payload ([`hcv1`]). Readers of outside bytes: every input is hostile.
pub mod hcv1;
pub mod lix;

use crate::conv::message::Message;
use crate::conv::session::Session;
use crate::conv::tokens::Tokenizer;

/// The session a lix archive becomes: its turns numbered 1.. in file order, counted with
/// `tokenizer`, each held to CONV.ADD's rules (what is imported must load again from RDB and
/// AOF). The error names the turn at fault.
pub fn session_from_lix(
    lix: lix::LixArchive,
    window: u32,
    tokenizer: Tokenizer,
    sid: u64,
) -> Result<Session, String> {
    let mut s = Session::new(window, lix.created_ms);
    s.sid = sid;
    s.tokenizer = tokenizer;
    for (i, t) in lix.turns.into_iter().enumerate() {
        let content = t.content.into_bytes();
        let m = Message {
            seq: 0,
            ts_ms: t.ts_ms,
            role: t.role,
            tokens: s.tokenizer.count(&content),
            content,
            meta: t.meta,
            emb: t.emb,
            name: t.name,
            tool_call_id: t.tool_call_id,
            tool_calls: t.tool_calls,
        };
        m.validate().map_err(|e| format!("turn {i}: {e}"))?;
        s.add(m, None).expect("fresh session numbers ascend");
    }
    Ok(s)
}
