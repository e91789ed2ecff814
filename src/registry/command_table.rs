//! Every command of the module in one table: handler, server flags, key positions and what is
//! done to the key, ACL categories beyond those the flags imply, and the docs that
//! `COMMAND DOCS` shows (the syntax line is the README's, see `command_syntax`).
//! `register.rs` turns the table into server calls.

use crate::conv::commands as conv;
use crate::conv::evicted;
use crate::import;
use crate::registry::dispatch::Entry;
use crate::semcache::commands as semcache;
use crate::urlemb::commands as urlemb;

/// The C function the server calls for one handler (what the crate's module macro makes per row).
macro_rules! entry {
    ($handler:path) => {{
        extern "C" fn call(
            ctx: *mut redis_module::raw::RedisModuleCtx,
            argv: *mut *mut redis_module::raw::RedisModuleString,
            argc: std::os::raw::c_int,
        ) -> std::os::raw::c_int {
            // SAFETY: the server calls with its command's arguments.
            unsafe { crate::registry::dispatch::dispatch(ctx, argv, argc, $handler) }
        }
        call as Entry
    }};
}

// What a command does with its key (the server's key-spec flags): RO/RW/OW/RM say what happens
// to the value, ACCESS that user data is returned, INSERT/UPDATE/DELETE how it changes. ACL
// key patterns follow them: `%R~` allows ACCESS, `%W~` allows INSERT/UPDATE/DELETE.
pub const RO: u64 = 1 << 0;
pub const RW: u64 = 1 << 1;
pub const OW: u64 = 1 << 2;
pub const RM: u64 = 1 << 3;
pub const ACCESS: u64 = 1 << 4;
pub const UPDATE: u64 = 1 << 5;
pub const INSERT: u64 = 1 << 6;
pub const DELETE: u64 = 1 << 7;

/// Key positions (as for `CreateCommand`: first, last (-1: to the end), step) and use.
#[derive(Clone, Copy)]
pub struct Keys {
    pub first: i32,
    pub last: i32,
    pub step: i32,
    pub flags: u64,
}

const fn key(flags: u64) -> Keys {
    Keys {
        first: 1,
        last: 1,
        step: 1,
        flags,
    }
}

const fn keys_every(step: i32, flags: u64) -> Keys {
    Keys {
        first: 1,
        last: -1,
        step,
        flags,
    }
}

/// Who may call a command.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Audience {
    /// Applications: ACL categories from the flags (read/write, fast/slow), plus these extra
    /// ones, plus the module's own category `@convcache`.
    Public(&'static str),
    /// Replication, the AOF and RESTORE-like tooling only: `@admin @dangerous @slow`, not
    /// `@read`/`@write`/`@convcache`, so only a user given them by name or by `+@all` runs them.
    Internal,
}

pub struct Command {
    pub name: &'static str,
    pub entry: Entry,
    /// Server command flags.
    pub flags: &'static str,
    pub keys: Keys,
    pub audience: Audience,
    /// Arguments after the command name, in `command_syntax` notation.
    pub syntax: &'static str,
    pub summary: &'static str,
    pub complexity: &'static str,
}

/// The module version a command first appeared in.
pub const SINCE: &str = "1.0.0";

/// The module's ACL category.
pub const MODULE_CATEGORY: &str = "convcache";

use Audience::{Internal, Public};

pub static COMMANDS: &[Command] = &[
    Command {
        name: "CONV.ADD",
        entry: entry!(conv::add),
        // Not deny-oom: past maxmemory an ADD waits for pressure archiving (backpressure.rs).
        flags: "write fast",
        keys: key(RW | INSERT),
        audience: Public(""),
        syntax: "key role content [META json] [EMB fp32] [TS ms:time] [WINDOW n:int] [SEQ n:int] [EX seconds:int | PXAT ms:time] [NAME n] [TOOL_CALL_ID id] [TOOL_CALLS json-array] [TOKENIZER name] [TOKENS n:int]",
        summary: "Appends a message to a session (optionally renewing its TTL) and returns its sequence number.",
        complexity: "O(N) in the size of the content (token count), META, EMB and TOOL_CALLS.",
    },
    Command {
        name: "CONV.CTX",
        entry: entry!(conv::ctx_cmd),
        flags: "readonly",
        keys: key(RO | ACCESS),
        audience: Public(""),
        syntax: "key [COUNT n:int] [TOKENS budget:int] [ROLES roles] [FORMAT messages|full|text|resp]",
        summary: "Returns the last messages of a session, oldest first (the window by default).",
        complexity: "O(N) in the messages returned; archived ones are read on a background thread.",
    },
    Command {
        name: "CONV.HISTORY",
        entry: entry!(conv::history),
        flags: "readonly",
        keys: key(RO | ACCESS),
        audience: Public(""),
        syntax: "key [FROM seq:int] [TO seq:int] [ROLES roles] [FORMAT messages|full|text|resp]",
        summary: "Returns every message of a session (or a sequence range), oldest first.",
        complexity: "O(N) in the messages returned; archived ones are read on a background thread.",
    },
    Command {
        name: "CONV.LEN",
        entry: entry!(conv::len),
        flags: "readonly fast",
        keys: key(RO),
        audience: Public(""),
        syntax: "key",
        summary: "Returns the number of messages of a session, archived ones included.",
        complexity: "O(1)",
    },
    Command {
        name: "CONV.INFO",
        entry: entry!(conv::info),
        flags: "readonly fast",
        keys: key(RO),
        audience: Public(""),
        syntax: "key",
        summary: "Returns a session's counters and settings as a map.",
        complexity: "O(1)",
    },
    Command {
        name: "CONV.CLEAR",
        entry: entry!(conv::clear),
        flags: "write fast",
        keys: key(RW | DELETE),
        audience: Public(""),
        syntax: "key",
        summary: "Drops every message of a session and its archive; the sequence counter stays.",
        complexity: "O(N) in the messages dropped.",
    },
    Command {
        name: "CONV.DEL",
        entry: entry!(conv::del),
        flags: "write fast",
        keys: key(RM | DELETE),
        audience: Public("keyspace"),
        syntax: "key",
        summary: "Deletes a session and its archive.",
        complexity: "O(N) in the messages deleted.",
    },
    Command {
        name: "CONV.SEARCH",
        entry: entry!(conv::search),
        flags: "readonly",
        keys: key(RO | ACCESS),
        audience: Public(""),
        syntax: "key (EMB fp32 | TEXT q) [K n:int] [RECENT n:int]",
        summary: "Returns the recent messages and the older ones most similar to a query, as JSON.",
        complexity: "O(N) in the session's messages; archived ones are scored on a background thread.",
    },
    Command {
        name: "CONV.FLUSH",
        entry: entry!(conv::flush_cmd),
        flags: "write",
        keys: key(RW | UPDATE),
        audience: Public(""),
        syntax: "key",
        summary: "Archives every in-memory message of a session; replies once durable.",
        complexity: "O(N) in the messages archived, written on a background thread.",
    },
    Command {
        name: "CONV.IMPORT",
        entry: entry!(import::import_cmd),
        flags: "write deny-oom",
        keys: key(RW | INSERT),
        audience: Public(""),
        syntax: "key name",
        summary: "Imports a lix-open-cache archive from the import directory into a new session.",
        complexity: "O(N) in the file's size, parsed on a background thread.",
    },
    Command {
        name: "SEMCACHE.SET",
        entry: entry!(semcache::set),
        flags: "write deny-oom",
        keys: key(RW | UPDATE),
        audience: Public(""),
        syntax: "key vector response [EX s:int | PX ms:int | PXAT ms:time] [META json] [MAXITEMS n:int] [ID id:int] [TAG name value [TAG name value ...]] [PROMPT text] [RENEW ms:int] [EVICT lru|lfu|fifo] [QUANT float32|int8] [ALGO hnsw|ivf] [INDEX]",
        summary: "Adds an entry (vector, response) to a semantic-cache bucket and returns its id.",
        complexity: "O(D) in the vector's dimension, plus O(N) when expired entries are reclaimed.",
    },
    Command {
        name: "SEMCACHE.GET",
        entry: entry!(semcache::get),
        flags: "readonly",
        keys: key(RO | ACCESS),
        audience: Public(""),
        syntax: "key vector [MINSIM s:double | MAXDIST d:double] [COUNT k:int] [WITHSCORES] [WITHMETA] [WITHIDS] [WITHHITS] [FILTER name value [FILTER name value ...]] [PROMPT text] [TOUCH]",
        summary: "Returns the cached responses most similar to a vector, best first.",
        complexity: "O(N*D) for N entries of dimension D (big buckets on a background thread); O(log N * D) with an index (buckets of semcache-index-min entries or more); O(1) for a PROMPT match.",
    },
    Command {
        name: "SEMCACHE.DEL",
        entry: entry!(semcache::del),
        flags: "write fast",
        keys: key(RW | DELETE),
        audience: Public(""),
        syntax: "key (id:int [id ...] | FILTER name value [FILTER name value ...])",
        summary: "Removes entries by id, or every entry having the given tags, from a semantic-cache bucket.",
        complexity: "O(M) for M ids; O(N) with FILTER.",
    },
    Command {
        name: "SEMCACHE.LEN",
        entry: entry!(semcache::len),
        flags: "readonly",
        keys: key(RO),
        audience: Public(""),
        syntax: "key",
        summary: "Returns the number of unexpired entries of a semantic-cache bucket.",
        complexity: "O(N)",
    },
    Command {
        name: "SEMCACHE.INFO",
        entry: entry!(semcache::info),
        flags: "readonly",
        keys: key(RO),
        audience: Public(""),
        syntax: "key",
        summary: "Returns a semantic-cache bucket's counters and settings as a map.",
        complexity: "O(N)",
    },
    Command {
        name: "URLEMB.SET",
        entry: entry!(urlemb::set),
        flags: "write deny-oom",
        keys: key(OW | UPDATE),
        audience: Public(""),
        syntax: "key vector [EX s:int]",
        summary: "Stores an embedding vector as a plain string with a TTL.",
        complexity: "O(D) in the vector's dimension.",
    },
    Command {
        name: "URLEMB.GET",
        entry: entry!(urlemb::get),
        flags: "readonly fast",
        keys: key(RO | ACCESS),
        audience: Public(""),
        syntax: "key",
        summary: "Returns a stored embedding vector, or nil.",
        complexity: "O(D) in the vector's dimension.",
    },
    Command {
        name: "URLEMB.MSET",
        entry: entry!(urlemb::mset),
        flags: "write deny-oom",
        keys: keys_every(2, OW | UPDATE),
        audience: Public(""),
        syntax: "key vector [key vector ...]",
        summary: "Stores several embedding vectors, all or nothing.",
        complexity: "O(N*D) for N vectors of dimension D.",
    },
    Command {
        name: "URLEMB.MGET",
        entry: entry!(urlemb::mget),
        flags: "readonly fast",
        keys: keys_every(1, RO | ACCESS),
        audience: Public(""),
        syntax: "key [key ...]",
        summary: "Returns several stored embedding vectors, nil for each missing one.",
        complexity: "O(N*D) for N vectors of dimension D.",
    },
    // Internal: what replication and the AOF carry. Accepted from a client with the rights,
    // as RESTORE is; every payload is checked as hostile input.
    Command {
        name: "CONV._LOAD",
        entry: entry!(conv::load),
        flags: "write deny-oom",
        keys: key(RW | UPDATE),
        audience: Internal,
        syntax: "key payload",
        summary: "Rebuilds a session from an AOF-rewrite payload (internal).",
        complexity: "O(N) in the payload's size.",
    },
    Command {
        name: "CONV._ARCHIVED",
        entry: entry!(conv::archived_cmd),
        flags: "write",
        keys: key(RW | UPDATE),
        audience: Internal,
        syntax: "key upto:int [PXAT ms:time]",
        summary: "Archives a session's messages up to a sequence number, as the primary did (internal).",
        complexity: "O(N) in the messages archived, written on a background thread.",
    },
    Command {
        name: "CONV._REHYDRATED",
        entry: entry!(conv::rehydrated_cmd),
        flags: "write deny-oom",
        keys: key(RW | UPDATE),
        audience: Internal,
        syntax: "key payload",
        summary: "Brings archived messages back into memory, as the primary did (internal).",
        complexity: "O(N) in the payload's size.",
    },
    Command {
        name: "CONV._EVICTED",
        entry: entry!(evicted::evicted_cmd),
        flags: "write fast",
        keys: key(RW | UPDATE),
        audience: Internal,
        syntax: "key",
        summary: "The primary evicted this session: keep its archive (internal).",
        complexity: "O(1).",
    },
    Command {
        name: "SEMCACHE._LOAD",
        entry: entry!(semcache::load),
        flags: "write deny-oom",
        keys: key(RW | UPDATE),
        audience: Internal,
        syntax: "key payload",
        summary: "Rebuilds a semantic-cache bucket from an AOF-rewrite payload (internal).",
        complexity: "O(N) in the payload's size.",
    },
    Command {
        name: "SEMCACHE._TOUCH",
        entry: entry!(semcache::touch),
        flags: "write fast",
        keys: key(RW | UPDATE),
        audience: Internal,
        syntax: "key id:int pxat:time [id pxat ...]",
        summary: "Sets entries' expiry, as the primary's SEMCACHE.GET ... TOUCH decided (internal).",
        complexity: "O(M) for M entries.",
    },
];

/// The ACL categories of a command, space separated (`module_category`: the module's own
/// category when the server could add it).
pub fn acl_categories(c: &Command, module_category: Option<&str>) -> String {
    let mut cats: Vec<&str> = Vec::new();
    match c.audience {
        Internal => cats.extend(["admin", "dangerous", "slow"]),
        Public(extra) => {
            let flags: Vec<&str> = c.flags.split_whitespace().collect();
            cats.push(if flags.contains(&"write") {
                "write"
            } else {
                "read"
            });
            cats.push(if flags.contains(&"fast") {
                "fast"
            } else {
                "slow"
            });
            cats.extend(extra.split_whitespace());
            cats.extend(module_category);
        }
    }
    cats.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::command_syntax;

    fn command(name: &str) -> &'static Command {
        COMMANDS.iter().find(|c| c.name == name).expect(name)
    }

    #[test]
    fn every_syntax_parses_and_names_its_keys() {
        for c in COMMANDS {
            let args =
                command_syntax::parse(c.syntax).unwrap_or_else(|e| panic!("{}: {e}", c.name));
            assert!(
                !c.summary.is_empty() && !c.complexity.is_empty(),
                "{}",
                c.name
            );
            // The first argument is the key, as the key positions say.
            let first = &args[0];
            let key = if first.kind == command_syntax::ArgType::Block {
                &first.subargs[0]
            } else {
                first
            };
            assert_eq!(key.kind, command_syntax::ArgType::Key, "{}", c.name);
            assert_eq!(c.keys.first, 1);
            // Exactly one of RO/RW/OW/RM, as the server requires.
            assert_eq!(
                (c.keys.flags & (RO | RW | OW | RM)).count_ones(),
                1,
                "{}",
                c.name
            );
            let read_only = c.flags.split_whitespace().any(|f| f == "readonly");
            assert_eq!(read_only, c.keys.flags & RO != 0, "{}", c.name);
        }
    }

    #[test]
    fn names_are_unique() {
        let mut names: Vec<_> = COMMANDS.iter().map(|c| c.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), COMMANDS.len());
    }

    #[test]
    fn categories_follow_flags_and_keep_internal_commands_apart() {
        assert_eq!(
            acl_categories(command("CONV.ADD"), Some(MODULE_CATEGORY)),
            "write fast convcache"
        );
        assert_eq!(acl_categories(command("CONV.CTX"), None), "read slow");
        assert_eq!(
            acl_categories(command("CONV.DEL"), Some(MODULE_CATEGORY)),
            "write fast keyspace convcache"
        );
        for c in COMMANDS.iter().filter(|c| c.name.contains("._")) {
            assert_eq!(c.audience, Internal, "{}", c.name);
            assert_eq!(
                acl_categories(c, Some(MODULE_CATEGORY)),
                "admin dangerous slow"
            );
        }
    }

    #[test]
    fn arities() {
        let arity =
            |n: &str| command_syntax::arity(&command_syntax::parse(command(n).syntax).unwrap());
        assert_eq!(arity("CONV.ADD"), -4);
        assert_eq!(arity("CONV.LEN"), 2);
        // The query keyword counts, its value is the handler's to check ("TEXT needs a value").
        assert_eq!(arity("CONV.SEARCH"), -3);
        assert_eq!(arity("CONV._ARCHIVED"), -3);
        assert_eq!(arity("URLEMB.MSET"), -3);
        assert_eq!(arity("URLEMB.MGET"), -2);
        assert_eq!(arity("SEMCACHE.DEL"), -3);
    }
}
