//! `ttl = "1h30m"` / `ttl = 300`: durations checked at compile time.

use syn::{Expr, ExprLit, ExprUnary, Lit, UnOp};

const GRAMMAR: &str = "write a duration like \"250ms\", \"30s\", \"5m\", \"1h30m\" or \"1d\", or an integer of seconds like `300`";

/// Parses a duration option's value into milliseconds, above zero.
pub(crate) fn parse(name: &str, value: &Expr) -> syn::Result<u64> {
    let err = |message: String| Err(syn::Error::new_spanned(value, message));
    match value {
        Expr::Lit(ExprLit {
            lit: Lit::Str(s), ..
        }) => match parse_text(&s.value()) {
            Ok(0) => err(format!("`{name}` must be longer than zero: {GRAMMAR}")),
            Ok(ms) => Ok(ms),
            Err(why) => err(format!(
                "invalid `{name}` {:?}: {why}; {GRAMMAR}",
                s.value()
            )),
        },
        Expr::Lit(ExprLit {
            lit: Lit::Int(i), ..
        }) => match i.base10_parse::<u64>() {
            Ok(0) => err(format!("`{name}` must be longer than zero: {GRAMMAR}")),
            Ok(secs) => match secs.checked_mul(1000) {
                Some(ms) => Ok(ms),
                None => err(format!("`{name}` is too long")),
            },
            Err(_) => err(format!(
                "`{name}` takes an integer of seconds without suffix: {GRAMMAR}"
            )),
        },
        Expr::Unary(ExprUnary {
            op: UnOp::Neg(_), ..
        }) => err(format!("`{name}` must be longer than zero: {GRAMMAR}")),
        _ => err(format!("`{name}` takes a literal: {GRAMMAR}")),
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
    use super::parse_text;

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
