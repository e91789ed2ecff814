//! Turns `command_table::COMMANDS` into server calls at load: CreateCommand, then
//! SetCommandInfo (key specs, arity, summary, since, complexity, arguments: both servers have
//! it) and SetCommandACLCategories with the module's own category (servers that have them:
//! Valkey 8+, Redis 7.2+/7.4+; Redis 7.0 has neither, and there ACL users name commands).

use std::ffi::{c_char, c_int, CString};
use std::mem::MaybeUninit;
use std::ptr;

use redis_module::{raw, Context, Status};

use crate::registry::command_syntax::{self, ArgSpec, ArgType};
use crate::registry::command_table::{acl_categories, Command, COMMANDS, MODULE_CATEGORY, SINCE};

/// Registers every command; a failure names the command and fails the module load.
pub fn register_commands(ctx: &Context) -> Status {
    let category = add_module_category(ctx);
    if unsafe { raw::RedisModule_SetCommandACLCategories }.is_none() {
        ctx.log_notice(
            "this server cannot put module commands in ACL categories: \
             grant convcache commands to ACL users by name",
        );
    }
    for c in COMMANDS {
        if let Err(e) = register(ctx, c, category) {
            ctx.log_warning(&format!("convcache: cannot register {}: {e}", c.name));
            return Status::Err;
        }
    }
    Status::Ok
}

/// Adds `@convcache` where the server can; None where it cannot (Redis 7.0).
fn add_module_category(ctx: &Context) -> Option<&'static str> {
    let add = unsafe { raw::RedisModule_AddACLCategory }?;
    let name = CString::new(MODULE_CATEGORY).ok()?;
    // SAFETY: a valid context during OnLoad and a NUL-terminated name.
    if unsafe { add(ctx.ctx, name.as_ptr()) } == raw::Status::Ok as c_int {
        Some(MODULE_CATEGORY)
    } else {
        ctx.log_warning("convcache: could not add the ACL category @convcache");
        None
    }
}

fn register(ctx: &Context, c: &Command, category: Option<&str>) -> Result<(), String> {
    let args = command_syntax::parse(c.syntax)?;
    let name = CString::new(c.name).map_err(|e| e.to_string())?;
    let flags = CString::new(c.flags).map_err(|e| e.to_string())?;
    let create = unsafe { raw::RedisModule_CreateCommand }.ok_or("no CreateCommand")?;
    // SAFETY: OnLoad context; strings outlive the call (the server copies them).
    let created = unsafe {
        create(
            ctx.ctx,
            name.as_ptr(),
            Some(c.entry),
            flags.as_ptr(),
            c.keys.first,
            c.keys.last,
            c.keys.step,
        )
    };
    if created != raw::Status::Ok as c_int {
        return Err("CreateCommand failed".into());
    }
    let get = unsafe { raw::RedisModule_GetCommand }.ok_or("no GetCommand")?;
    // SAFETY: the command was just created under this name.
    let command = unsafe { get(ctx.ctx, name.as_ptr()) };
    if command.is_null() {
        return Err("GetCommand found nothing".into());
    }
    if let Some(set_info) = unsafe { raw::RedisModule_SetCommandInfo } {
        let mut arena = Arena::default();
        let info = arena.info(c, &args);
        // SAFETY: every pointer in `info` points into `arena`, alive until after the call;
        // the server copies what it keeps.
        if unsafe { set_info(command, &info) } != raw::Status::Ok as c_int {
            return Err("SetCommandInfo refused the docs (see the server log)".into());
        }
    }
    if let Some(set_acl) = unsafe { raw::RedisModule_SetCommandACLCategories } {
        let cats = CString::new(acl_categories(c, category)).map_err(|e| e.to_string())?;
        // SAFETY: a command of this module during OnLoad; a NUL-terminated string.
        if unsafe { set_acl(command, cats.as_ptr()) } != raw::Status::Ok as c_int {
            return Err(format!("SetCommandACLCategories refused '{cats:?}'"));
        }
    }
    Ok(())
}

static INFO_VERSION: raw::RedisModuleCommandInfoVersion = raw::RedisModuleCommandInfoVersion {
    version: 1,
    sizeof_historyentry: std::mem::size_of::<raw::RedisModuleCommandHistoryEntry>(),
    sizeof_keyspec: std::mem::size_of::<raw::RedisModuleCommandKeySpec>(),
    sizeof_arg: std::mem::size_of::<raw::RedisModuleCommandArg>(),
};

fn zeroed<T>() -> T {
    // SAFETY: used for the server's C structs, whose all-zero value is their terminator.
    unsafe { MaybeUninit::zeroed().assume_init() }
}

/// Owns the C strings and arrays a `RedisModuleCommandInfo` points into.
#[derive(Default)]
struct Arena {
    strings: Vec<CString>,
    arg_arrays: Vec<Vec<raw::RedisModuleCommandArg>>,
    key_specs: Vec<raw::RedisModuleCommandKeySpec>,
}

impl Arena {
    fn text(&mut self, s: &str) -> *const c_char {
        let c = CString::new(s).unwrap_or_default();
        let p = c.as_ptr();
        self.strings.push(c); // moving a CString keeps its heap buffer where it is
        p
    }

    fn info(&mut self, c: &Command, args: &[ArgSpec]) -> raw::RedisModuleCommandInfo {
        let mut spec: raw::RedisModuleCommandKeySpec = zeroed();
        spec.flags = c.keys.flags;
        spec.begin_search_type = raw::RedisModuleKeySpecBeginSearchType_REDISMODULE_KSPEC_BS_INDEX;
        spec.bs.index.pos = c.keys.first;
        spec.find_keys_type = raw::RedisModuleKeySpecFindKeysType_REDISMODULE_KSPEC_FK_RANGE;
        // Relative to the first key; -1 = up to the last argument.
        spec.fk.range.lastkey = if c.keys.last < 0 {
            c.keys.last
        } else {
            c.keys.last - c.keys.first
        };
        spec.fk.range.keystep = c.keys.step;
        spec.fk.range.limit = 0;
        self.key_specs = vec![spec, zeroed()];
        raw::RedisModuleCommandInfo {
            version: &INFO_VERSION,
            summary: self.text(c.summary),
            complexity: self.text(c.complexity),
            since: self.text(SINCE),
            history: ptr::null_mut(),
            tips: ptr::null(),
            arity: command_syntax::arity(args),
            key_specs: self.key_specs.as_mut_ptr(),
            args: self.args(args),
        }
    }

    /// A zero-terminated array of the server's argument structs.
    fn args(&mut self, specs: &[ArgSpec]) -> *mut raw::RedisModuleCommandArg {
        let mut out: Vec<raw::RedisModuleCommandArg> = specs.iter().map(|a| self.arg(a)).collect();
        out.push(zeroed());
        let p = out.as_mut_ptr();
        self.arg_arrays.push(out); // the Vec's buffer stays put when the Vec moves
        p
    }

    fn arg(&mut self, a: &ArgSpec) -> raw::RedisModuleCommandArg {
        let mut r: raw::RedisModuleCommandArg = zeroed();
        r.name = self.text(&a.name);
        r.type_ = match a.kind {
            ArgType::String => raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_STRING,
            ArgType::Integer => raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_INTEGER,
            ArgType::Double => raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_DOUBLE,
            ArgType::Key => raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_KEY,
            ArgType::UnixTime => raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_UNIX_TIME,
            ArgType::PureToken => raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_PURE_TOKEN,
            ArgType::OneOf => raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_ONEOF,
            ArgType::Block => raw::RedisModuleCommandArgType_REDISMODULE_ARG_TYPE_BLOCK,
        };
        // Every key is the table's single key spec.
        r.key_spec_index = if a.kind == ArgType::Key { 0 } else { -1 };
        if let Some(t) = &a.token {
            r.token = self.text(t);
        }
        let mut flags = 0;
        if a.optional {
            flags |= raw::REDISMODULE_CMD_ARG_OPTIONAL;
        }
        if a.multiple {
            flags |= raw::REDISMODULE_CMD_ARG_MULTIPLE;
        }
        r.flags = flags as c_int;
        if !a.subargs.is_empty() {
            r.subargs = self.args(&a.subargs);
        }
        r
    }
}
