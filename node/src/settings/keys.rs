//! Which setting names exist, and what to say about a name that does not: a
//! typo in a TOML key stops start-up naming the nearest known setting; an
//! unknown `MESHRELAY_*` variable is warned about the same way (the
//! environment is shared with other programs, so it does not stop a start).

/// `MESHRELAY_*` variables that are not settings but are read elsewhere
/// (the test suite's), so they are never warned about.
const NOT_SETTINGS: &[&str] = &["MESHRELAY_VECTORS", "MESHRELAY_TEST_DATABASE_URL"];

/// The known name nearest to `unknown`, when one is near enough to be a typo.
pub fn nearest<'a>(unknown: &str, known: &[&'a str]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| (strsim::damerau_levenshtein(unknown, k), *k))
        .filter(|(d, k)| *d <= 3.max(k.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn suggestion(unknown: &str, known: &[&str], spell: impl Fn(&str) -> String) -> String {
    match nearest(unknown, known) {
        Some(k) => format!("; did you mean {}?", spell(k)),
        None => String::new(),
    }
}

/// The error for a file key that is no setting.
pub fn unknown_key(key: &str, known: &[&str]) -> String {
    format!(
        "unknown setting {key:?} in the config file{}",
        suggestion(key, known, |k| format!("{k:?}"))
    )
}

/// The warning for a `MESHRELAY_*` variable that is no setting, or None when
/// it is one of the variables read elsewhere.
pub fn unknown_variable(var: &str, known: &[&str]) -> Option<String> {
    if NOT_SETTINGS.contains(&var) {
        return None;
    }
    let name = var.trim_start_matches("MESHRELAY_").to_ascii_lowercase();
    Some(format!(
        "ignoring {var}: no setting is named {name:?}{}",
        suggestion(&name, known, |k| format!(
            "MESHRELAY_{}",
            k.to_ascii_uppercase()
        ))
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KNOWN: &[&str] = &[
        "max_hops",
        "seed_peers",
        "listen",
        "admin_listen",
        "public_url",
    ];

    #[test]
    fn a_typo_names_the_nearest_setting() {
        assert_eq!(nearest("max_hop", KNOWN), Some("max_hops"));
        assert_eq!(nearest("seed_peer", KNOWN), Some("seed_peers"));
        assert_eq!(nearest("publc_url", KNOWN), Some("public_url"));
        assert_eq!(nearest("colour_scheme", KNOWN), None);
        assert!(unknown_key("max_hop", KNOWN).ends_with("did you mean \"max_hops\"?"));
        assert_eq!(
            unknown_variable("MESHRELAY_SEED_PEER", KNOWN).unwrap(),
            "ignoring MESHRELAY_SEED_PEER: no setting is named \"seed_peer\"; did you mean MESHRELAY_SEED_PEERS?"
        );
        assert_eq!(unknown_variable("MESHRELAY_VECTORS", KNOWN), None);
    }
}
