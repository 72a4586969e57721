//! `ttl = "1h30m"` / `ttl = 300`: durations checked at compile time.

use syn::{Expr, ExprLit, ExprUnary, Lit, UnOp};

const GRAMMAR: &str = "write a duration like \"250ms\", \"30s\", \"5m\", \"1h30m\" or \"1d\", or an integer of seconds like `300`";

/// The longest duration an option may have: a year (kept equal to the
/// runtime's `MAX_TTL`).
const MAX_MS: u64 = 365 * 86_400_000;

/// Parses a duration option's value into milliseconds, above zero and at
/// most a year.
pub(crate) fn parse(name: &str, value: &Expr) -> syn::Result<u64> {
    let ms = parse_any(name, value)?;
    if ms > MAX_MS {
        return Err(syn::Error::new_spanned(
            value,
            format!(
                "`{name}` is longer than a year, the longest a cache duration may be: write at most \"365d\""
            ),
        ));
    }
    Ok(ms)
}

fn parse_any(name: &str, value: &Expr) -> syn::Result<u64> {
    let err = |message: String| Err(syn::Error::new_spanned(value, message));
    match value {
        Expr::Lit(ExprLit {
            lit: Lit::Str(s), ..
        }) => {
            let text = s.value();
            match parse_text(&text) {
                Ok(0) => err(format!("`{name}` must be longer than zero: {GRAMMAR}")),
                Ok(ms) => Ok(ms),
                Err(why) => match suggestion(&text) {
                    Some(instead) => err(format!(
                        "invalid `{name}` {text:?}: write {instead:?} (units are ms, s, m, h and d, with no spaces)"
                    )),
                    None => err(format!("invalid `{name}` {text:?}: {why}; {GRAMMAR}")),
                },
            }
        }
        Expr::Lit(ExprLit {
            lit: Lit::Int(i), ..
        }) => match i.base10_parse::<u64>() {
            Ok(0) => err(format!("`{name}` must be longer than zero: {GRAMMAR}")),
            Ok(secs) => match secs.checked_mul(1000) {
                Some(ms) => Ok(ms),
                None => err(format!("`{name}` is too long: {GRAMMAR}")),
            },
            Err(_) => err(format!(
                "`{name}` takes an integer of seconds without suffix: {GRAMMAR}"
            )),
        },
        Expr::Lit(ExprLit {
            lit: Lit::Float(f), ..
        }) => {
            let ms = f.base10_parse::<f64>().map(|secs| secs * 1000.0);
            match ms {
                Ok(ms) if ms >= 1.0 && ms.fract() == 0.0 && ms < 1e15 => err(format!(
                    "`{name}` takes whole seconds: write \"{ms}ms\" for a fraction of a second"
                )),
                _ => err(format!("`{name}` takes whole seconds: {GRAMMAR}")),
            }
        }
        Expr::Lit(ExprLit {
            lit: Lit::Bool(_), ..
        }) => err(format!(
            "`{name}` takes a duration, not a bool: write `{name} = \"1h\"`, or leave `{name}` out; {GRAMMAR}"
        )),
        Expr::Unary(ExprUnary {
            op: UnOp::Neg(_), ..
        }) => err(format!("`{name}` must be longer than zero: {GRAMMAR}")),
        Expr::Path(path) => err(format!(
            "`{name}` takes a literal: the macro checks the duration at compile time and cannot read `{}`; {GRAMMAR}",
            quote::ToTokens::to_token_stream(path)
                .to_string()
                .replace(' ', "")
        )),
        _ => err(format!("`{name}` takes a literal: {GRAMMAR}")),
    }
}

/// What a malformed duration probably meant, if that is a valid duration:
/// `"5 minutes"` → `"5m"`, `"1 hour 30 min"` → `"1h30m"`, `"90"` → `"90s"`.
fn suggestion(text: &str) -> Option<String> {
    const LONG_UNITS: [(&str, &[&str]); 5] = [
        (
            "ms",
            &["millisecond", "milliseconds", "millis", "msec", "msecs"],
        ),
        ("s", &["sec", "secs", "second", "seconds"]),
        ("m", &["min", "mins", "minute", "minutes"]),
        ("h", &["hr", "hrs", "hour", "hours"]),
        ("d", &["day", "days"]),
    ];
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    if !compact.is_empty() && compact.bytes().all(|b| b.is_ascii_digit()) {
        return Some(format!("{compact}s")).filter(|s| parse_text(s).is_ok_and(|ms| ms > 0));
    }
    let mut rewritten = String::new();
    let mut rest = compact.as_str();
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let after = &rest[digits..];
        let letters = after.bytes().take_while(u8::is_ascii_alphabetic).count();
        if digits == 0 || letters == 0 {
            return None;
        }
        let word = after[..letters].to_ascii_lowercase();
        let unit = LONG_UNITS
            .iter()
            .find(|(short, long)| *short == word || long.contains(&word.as_str()))
            .map_or(word.as_str(), |(short, _)| short);
        rewritten.push_str(&rest[..digits]);
        rewritten.push_str(unit);
        rest = &after[letters..];
    }
    match parse_text(&rewritten) {
        Ok(ms) if ms > 0 && rewritten != text => Some(rewritten),
        _ => None,
    }
}

/// `"1h30m"` → 5_400_000. Units: `ms`, `s`, `m`, `h`, `d`, largest first,
/// each at most once.
fn parse_text(text: &str) -> Result<u64, &'static str> {
    const UNITS: [(&str, u64); 5] = [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
        ("ms", 1),
    ];
    if text.is_empty() {
        return Err("it is empty");
    }
    if text.starts_with('-') {
        return Err("it is negative");
    }
    let mut rest = text;
    let mut total: u64 = 0;
    let mut last_unit = None;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err("each part is a number followed by a unit, with no spaces");
        }
        let number: u64 = rest[..digits]
            .parse()
            .map_err(|_| "a number is too large")?;
        rest = &rest[digits..];
        let letters = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit = &rest[..letters];
        rest = &rest[letters..];
        let Some(index) = UNITS.iter().position(|(name, _)| *name == unit) else {
            return Err(if unit.is_empty() {
                "a number has no unit"
            } else {
                "the unit is not one of ms, s, m, h, d"
            });
        };
        if last_unit.is_some_and(|last| index <= last) {
            return Err("units go from largest to smallest, each once");
        }
        last_unit = Some(index);
        total = number
            .checked_mul(UNITS[index].1)
            .and_then(|ms| total.checked_add(ms))
            .ok_or("it is too long")?;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::{parse_text, suggestion};

    #[test]
    fn suggestions() {
        assert_eq!(suggestion("5 minutes").as_deref(), Some("5m"));
        assert_eq!(suggestion("1 hour 30 min").as_deref(), Some("1h30m"));
        assert_eq!(suggestion("30 S").as_deref(), Some("30s"));
        assert_eq!(suggestion("90").as_deref(), Some("90s"));
        assert_eq!(suggestion(" 5s").as_deref(), Some("5s"));
        for hopeless in ["-1s", "1.5s", "5 fortnights", "0 seconds", "1s1h", "", "s"] {
            assert_eq!(suggestion(hopeless), None, "{hopeless:?}");
        }
    }

    #[test]
    fn grammar() {
        assert_eq!(parse_text("250ms"), Ok(250));
        assert_eq!(parse_text("30s"), Ok(30_000));
        assert_eq!(parse_text("5m"), Ok(300_000));
        assert_eq!(parse_text("1h30m"), Ok(5_400_000));
        assert_eq!(parse_text("1d"), Ok(86_400_000));
        assert_eq!(parse_text("1m30s500ms"), Ok(90_500));
        assert_eq!(parse_text("0s"), Ok(0));
        for bad in [
            "",
            "5",
            "5 minutes",
            "-1s",
            "1s1h",
            "1m1m",
            "1.5s",
            "5x",
            "s",
            " 5s",
        ] {
            assert!(parse_text(bad).is_err(), "{bad:?}");
        }
    }
}
