//! "Did you mean ...?": the closest of the names the user could have meant.

/// The candidate closest to `text`, if it is close enough to be what was
/// meant: a typo (`tll`), or a longer or shorter form of it (`user_id` for
/// `id`, `dbase` for `db`).
pub(crate) fn closest<'a, S>(
    text: &str,
    candidates: impl IntoIterator<Item = &'a S>,
) -> Option<&'a str>
where
    S: AsRef<str> + ?Sized + 'a,
{
    let limit = (text.chars().count() / 3).max(2);
    let related = |candidate: &str| {
        let (short, long) = if candidate.len() < text.len() {
            (candidate, text)
        } else {
            (text, candidate)
        };
        short.len() >= 2 && (long.starts_with(short) || long.ends_with(short))
    };
    candidates
        .into_iter()
        .map(AsRef::as_ref)
        .map(|candidate| (edit_distance(text, candidate), candidate))
        .filter(|&(distance, candidate)| distance <= limit || related(candidate))
        .min()
        .map(|(_, candidate)| candidate)
}

/// Levenshtein distance, by characters.
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_typos_only() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(closest("tll", &["prefix", "ttl", "key"]), Some("ttl"));
        assert_eq!(closest("prefx", &["prefix", "ttl"]), Some("prefix"));
        assert_eq!(closest("user_idd", &["user_id", "lang"]), Some("user_id"));
        assert_eq!(closest("lifetime", &["prefix", "ttl", "key"]), None);
        assert_eq!(closest("user_id", &["db", "id"]), Some("id"));
        assert_eq!(closest("dbase", &["db", "id"]), Some("db"));
        assert_eq!(closest("database", &["db", "id"]), None);
    }
}
