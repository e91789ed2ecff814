//! A command's argument syntax, written as the README writes it
//! (`key role content [META json] [EX s | PX ms] [FORMAT a|b] id [id ...]`), parsed into the
//! argument tree that `COMMAND DOCS` shows, and the arity the server checks before a handler
//! runs. Pure Rust: no server calls.
//!
//! Notation: an ALL-CAPS word is a token; a token followed by a lower-case word takes that
//! value; a lone token is a flag. `name:int`, `name:double`, `name:time` (unix time) give a
//! value's type (default: string; `key` is a key). `[...]` is optional, `( | )` one of,
//! `FORMAT a|b|c` a token with one of fixed words, `x [x ...]` repeats.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArgType {
    String,
    Integer,
    Double,
    Key,
    UnixTime,
    PureToken,
    OneOf,
    Block,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ArgSpec {
    pub name: String,
    pub kind: ArgType,
    pub token: Option<String>,
    pub optional: bool,
    pub multiple: bool,
    /// Alternatives of a `OneOf`, parts of a `Block`.
    pub subargs: Vec<ArgSpec>,
}

impl ArgSpec {
    fn new(name: &str, kind: ArgType) -> ArgSpec {
        ArgSpec {
            name: name.to_string(),
            kind,
            token: None,
            optional: false,
            multiple: false,
            subargs: Vec::new(),
        }
    }

    fn group(kind: ArgType, subargs: Vec<ArgSpec>) -> ArgSpec {
        // A group is named after what it holds: `ex_or_px_or_pxat`, `key_vector`.
        let sep = if kind == ArgType::OneOf { "_or_" } else { "_" };
        let name = subargs
            .iter()
            .map(|a| a.token.as_deref().map_or(a.name.clone(), str::to_lowercase))
            .collect::<Vec<_>>()
            .join(sep);
        ArgSpec {
            subargs,
            ..ArgSpec::new(&name, kind)
        }
    }

    /// Fewest argv words this argument takes when present.
    fn min_words(&self) -> usize {
        let own = match self.kind {
            ArgType::OneOf => self
                .subargs
                .iter()
                .map(ArgSpec::min_words)
                .min()
                .unwrap_or(0),
            ArgType::Block => self.subargs.iter().map(ArgSpec::min_words).sum(),
            ArgType::PureToken => return 1,
            _ => 1,
        };
        own + usize::from(self.token.is_some())
    }

    /// Whether it always takes the same number of words.
    fn fixed_width(&self) -> bool {
        if self.optional || self.multiple {
            return false;
        }
        match self.kind {
            ArgType::OneOf => {
                let w = self.min_words();
                self.subargs.iter().all(|a| {
                    a.fixed_width() && a.min_words() + usize::from(self.token.is_some()) == w
                })
            }
            ArgType::Block => self.subargs.iter().all(ArgSpec::fixed_width),
            _ => true,
        }
    }
}

impl ArgSpec {
    /// Words the server's arity counts for this argument: a keyword counts, its value is left
    /// to the handler, which names a missing one (`ERR TEXT needs a value`) as it does for
    /// optional keywords.
    fn arity_words(&self) -> usize {
        if self.token.is_some() {
            return 1;
        }
        match self.kind {
            ArgType::OneOf => self
                .subargs
                .iter()
                .map(ArgSpec::arity_words)
                .min()
                .unwrap_or(0),
            ArgType::Block => self.subargs.iter().map(ArgSpec::arity_words).sum(),
            _ => 1,
        }
    }
}

/// The server's arity for these arguments: the words of a shortest call counting the command
/// name (a required keyword without its value still reaches the handler), negative when a
/// call may have more.
pub fn arity(args: &[ArgSpec]) -> i32 {
    let required = args.iter().filter(|a| !a.optional);
    let words: usize = required.clone().map(ArgSpec::arity_words).sum();
    let full: usize = required.map(ArgSpec::min_words).sum();
    let n = (words + 1) as i32;
    if words == full && args.iter().all(ArgSpec::fixed_width) {
        n
    } else {
        -n
    }
}

fn is_token(word: &str) -> bool {
    word.chars().any(|c| c.is_ascii_uppercase())
        && word
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

fn lex(syntax: &str) -> Vec<&str> {
    let mut out = Vec::new();
    for piece in syntax.split_whitespace() {
        let opens = piece.len() - piece.trim_start_matches(['[', '(']).len();
        let core = &piece[opens..];
        let word = core.trim_end_matches([']', ')']);
        for i in 0..opens {
            out.push(&piece[i..i + 1]);
        }
        if !word.is_empty() {
            out.push(word);
        }
        let closes = &core[word.len()..];
        for i in 0..closes.len() {
            out.push(&closes[i..i + 1]);
        }
    }
    out
}

struct Parser<'a> {
    words: Vec<&'a str>,
    pos: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<&'a str> {
        self.words.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<&'a str> {
        let w = self.peek();
        self.pos += 1;
        w
    }

    /// Arguments up to a `|`, a closing bracket or the end. A trailing `...` is returned as
    /// `repeats = true`.
    fn seq(&mut self) -> Result<(Vec<ArgSpec>, bool), String> {
        let mut args: Vec<ArgSpec> = Vec::new();
        loop {
            match self.peek() {
                None | Some("|") | Some("]") | Some(")") => return Ok((args, false)),
                Some("...") => {
                    self.next();
                    return match self.peek() {
                        Some("]") => Ok((args, true)),
                        other => Err(format!("'...' must end a [...] group, found {other:?}")),
                    };
                }
                Some("[") | Some("(") => {
                    if let Some(a) = self.group(&mut args)? {
                        args.push(a);
                    }
                }
                Some(_) => {
                    let a = self.word()?;
                    args.push(a);
                }
            }
        }
    }

    /// `[...]` or `(...)`. A repeat group (`[x ...]`) marks the arguments before it as
    /// repeating and yields nothing new.
    fn group(&mut self, before: &mut Vec<ArgSpec>) -> Result<Option<ArgSpec>, String> {
        let open = self.next().unwrap_or_default();
        let close = if open == "[" { "]" } else { ")" };
        let mut alternatives = vec![self.seq()?];
        while self.peek() == Some("|") {
            self.next();
            alternatives.push(self.seq()?);
        }
        if self.next() != Some(close) {
            return Err(format!("'{open}' is not closed by '{close}'"));
        }
        let optional = open == "[";
        if alternatives.len() == 1 {
            let (args, repeats) = alternatives.pop().unwrap_or_default();
            if repeats {
                mark_repeated(before, args)?;
                return Ok(None);
            }
            let mut a = match args.len() {
                0 => return Err("empty group".into()),
                1 => args.into_iter().next().unwrap_or_else(|| unreachable!()),
                _ => ArgSpec::group(ArgType::Block, args),
            };
            a.optional |= optional;
            return Ok(Some(a));
        }
        let mut subargs = Vec::new();
        for (args, repeats) in alternatives {
            if repeats || args.is_empty() {
                return Err("an alternative may not be empty or repeat".into());
            }
            subargs.push(if args.len() == 1 {
                args.into_iter().next().unwrap_or_else(|| unreachable!())
            } else {
                ArgSpec::group(ArgType::Block, args)
            });
        }
        let mut a = ArgSpec::group(ArgType::OneOf, subargs);
        a.optional = optional;
        Ok(Some(a))
    }

    /// A value (`name[:type]`), a flag (`TOKEN`) or a token with its value.
    fn word(&mut self) -> Result<ArgSpec, String> {
        let w = self.next().unwrap_or_default();
        if !is_token(w) {
            return value(w);
        }
        let takes_value = self
            .peek()
            .is_some_and(|v| !is_token(v) && !["|", "[", "]", "(", ")", "..."].contains(&v));
        if !takes_value {
            let mut a = ArgSpec::new(&w.to_lowercase(), ArgType::PureToken);
            a.token = Some(w.to_string());
            return Ok(a);
        }
        let v = self.next().unwrap_or_default();
        let mut a = if v.contains('|') {
            // FORMAT a|b|c: the token takes one of fixed words.
            let choices = v
                .split('|')
                .map(|c| {
                    let mut t = ArgSpec::new(c, ArgType::PureToken);
                    t.token = Some(c.to_string());
                    t
                })
                .collect();
            ArgSpec {
                subargs: choices,
                ..ArgSpec::new(&w.to_lowercase(), ArgType::OneOf)
            }
        } else {
            value(v)?
        };
        a.token = Some(w.to_string());
        Ok(a)
    }
}

fn value(word: &str) -> Result<ArgSpec, String> {
    let (name, ty) = word.split_once(':').unwrap_or((word, ""));
    let kind = match (name, ty) {
        ("key", "") => ArgType::Key,
        (_, "") => ArgType::String,
        (_, "int") => ArgType::Integer,
        (_, "double") => ArgType::Double,
        (_, "time") => ArgType::UnixTime,
        _ => return Err(format!("unknown type '{ty}' in '{word}'")),
    };
    if name.is_empty() {
        return Err(format!("no name in '{word}'"));
    }
    Ok(ArgSpec::new(name, kind))
}

/// `x [x ...]` / `a b [a b ...]`: the arguments just before the group repeat.
fn mark_repeated(before: &mut Vec<ArgSpec>, repeated: Vec<ArgSpec>) -> Result<(), String> {
    let n = repeated.len();
    let same = n > 0
        && before.len() >= n
        && before[before.len() - n..]
            .iter()
            .zip(&repeated)
            .all(|(a, b)| a.name == b.name && a.token == b.token);
    if !same {
        return Err("'[... ...]' must repeat the arguments just before it".into());
    }
    let mut tail = before.split_off(before.len() - n);
    let mut a = if n == 1 {
        tail.pop().unwrap_or_else(|| unreachable!())
    } else {
        ArgSpec::group(ArgType::Block, tail)
    };
    a.multiple = true;
    before.push(a);
    Ok(())
}

/// Parses a syntax line (without the command name).
pub fn parse(syntax: &str) -> Result<Vec<ArgSpec>, String> {
    let mut p = Parser {
        words: lex(syntax),
        pos: 0,
    };
    let (args, repeats) = p.seq()?;
    if repeats || p.peek().is_some() {
        return Err(format!("unexpected '{}'", p.peek().unwrap_or("...")));
    }
    Ok(args)
}

/// Writes arguments back in the notation `parse` reads, without types (as the README shows
/// them).
pub fn render(args: &[ArgSpec]) -> String {
    args.iter().map(render_arg).collect::<Vec<_>>().join(" ")
}

fn render_arg(a: &ArgSpec) -> String {
    let mut core = match a.kind {
        ArgType::PureToken => return wrap_optional(a, a.token.clone().unwrap_or_default()),
        ArgType::OneOf if a.subargs.iter().all(|s| s.kind == ArgType::PureToken) => a
            .subargs
            .iter()
            .map(|s| s.token.clone().unwrap_or_default())
            .collect::<Vec<_>>()
            .join("|"),
        ArgType::OneOf => {
            let inner = a
                .subargs
                .iter()
                .map(render_arg)
                .collect::<Vec<_>>()
                .join(" | ");
            return if a.optional {
                format!("[{inner}]")
            } else {
                format!("({inner})")
            };
        }
        ArgType::Block => render(&a.subargs),
        _ => a.name.clone(),
    };
    if let Some(t) = &a.token {
        core = format!("{t} {core}");
    }
    if a.multiple {
        core = format!("{core} [{core} ...]");
    }
    wrap_optional(a, core)
}

fn wrap_optional(a: &ArgSpec, s: String) -> String {
    if a.optional {
        format!("[{s}]")
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(s: &str) -> Vec<ArgSpec> {
        let args = parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
        let plain: String = s
            .split_whitespace()
            .map(|w| match w.split_once(':') {
                Some((name, ty)) => format!("{name}{}", ty.trim_start_matches(char::is_alphabetic)),
                None => w.to_string(),
            })
            .collect::<Vec<_>>()
            .join(" ");
        assert_eq!(render(&args), plain);
        args
    }

    #[test]
    fn values_tokens_and_types() {
        let a = roundtrip("key role content [META json] [TS ms:time] [WINDOW n:int]");
        assert_eq!(a.len(), 6);
        assert_eq!(a[0].kind, ArgType::Key);
        assert_eq!((a[1].kind, a[1].optional), (ArgType::String, false));
        assert_eq!(
            (a[3].token.as_deref(), a[3].kind),
            (Some("META"), ArgType::String)
        );
        assert_eq!(a[4].token.as_deref(), Some("TS"));
        assert_eq!((a[4].kind, a[4].optional), (ArgType::UnixTime, true));
        assert_eq!((a[5].name.as_str(), a[5].kind), ("n", ArgType::Integer));
        assert_eq!(arity(&a), -4);
    }

    #[test]
    fn one_of_flags_and_choices() {
        let a =
            roundtrip("key vector [MINSIM s:double | MAXDIST d:double] [COUNT k:int] [WITHSCORES]");
        assert_eq!(a[2].kind, ArgType::OneOf);
        assert_eq!(a[2].name, "minsim_or_maxdist");
        assert!(a[2].optional);
        assert_eq!(a[2].subargs[1].kind, ArgType::Double);
        assert_eq!(a[4].kind, ArgType::PureToken);
        let f = roundtrip("key [FORMAT messages|full|text|resp]");
        assert_eq!(
            (f[1].kind, f[1].token.as_deref()),
            (ArgType::OneOf, Some("FORMAT"))
        );
        assert_eq!(f[1].subargs.len(), 4);
        assert_eq!(f[1].subargs[2].token.as_deref(), Some("text"));
        let s = roundtrip("key (EMB fp32 | TEXT q) [K n:int]");
        assert!(!s[1].optional);
        // The keyword counts; a missing value is the handler's to name.
        assert_eq!(arity(&s), -3);
        assert_eq!(arity(&roundtrip("key TEXT q")), -3);
        assert_eq!(arity(&roundtrip("key q")), 3);
    }

    #[test]
    fn repeats() {
        let d = roundtrip("key id:int [id ...]");
        assert_eq!(d.len(), 2);
        assert!(d[1].multiple && !d[1].optional);
        assert_eq!(arity(&d), -3);
        let m = roundtrip("key vector [key vector ...]");
        assert_eq!(m.len(), 1);
        assert_eq!((m[0].kind, m[0].multiple), (ArgType::Block, true));
        assert_eq!(m[0].subargs[0].kind, ArgType::Key);
        assert_eq!(arity(&m), -3);
    }

    #[test]
    fn fixed_arity() {
        assert_eq!(arity(&roundtrip("key")), 2);
        assert_eq!(arity(&roundtrip("key payload")), 3);
        assert_eq!(arity(&roundtrip("key upto:int [PXAT ms:time]")), -3);
    }

    #[test]
    fn mistakes_are_errors() {
        for bad in [
            "key [META json",
            "key id [other ...]",
            "key ... x",
            "key [ ]",
            "key n:float",
            "key )",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
