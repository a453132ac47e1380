//! Filters as clients send them (queries, subscriptions) and peers send them
//! (preferences, sync): deserialization, `validate`, and matching a fixed set
//! of real payloads against any filter that validates (PROTOCOL.md 3).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use meshrelay_protocol::filter::{any_matches, Filter};
use meshrelay_protocol::{Limits, Payload};

/// Valid payloads from the shared vectors (`payloads.json`), also the `payload` seeds.
const PAYLOADS: [&str; 5] = [
    include_str!("../seeds/payload/valid-first-entry.json"),
    include_str!("../seeds/payload/valid-second-entry.json"),
    include_str!("../seeds/payload/valid-unicode-content.json"),
    include_str!("../seeds/payload/valid-delete-other-author.json"),
    include_str!("../seeds/payload/valid-punctuation.json"),
];

fn payloads() -> &'static [Payload] {
    static P: OnceLock<Vec<Payload>> = OnceLock::new();
    P.get_or_init(|| {
        PAYLOADS
            .iter()
            .map(|t| Payload::from_json(t.trim(), &Limits::default(), 1_763_800_200).unwrap())
            .collect()
    })
}

fn check(f: &Filter) {
    f.validate().expect("a filter that parsed must validate");
    // Serialized and read back, it is the same filter and matches the same.
    let back = Filter::from_value(serde_json::to_value(f).unwrap()).expect("round trip refused");
    assert_eq!(&back, f);
    // The value cap (`max_filter_values`) counts every list, tag values included.
    let n = f.value_count();
    let lists = [&f.ids, &f.authors, &f.kinds, &f.channels];
    assert!(lists.iter().all(|l| l.as_ref().map_or(0, Vec::len) <= n));
    f.check_values(n)
        .expect("a filter is refused at its own value count");
    if n > 0 {
        assert!(
            f.check_values(n - 1).is_err(),
            "a filter passes below its value count"
        );
    }
    for p in payloads() {
        let m = f.matches(p);
        assert_eq!(back.matches(p), m);
        assert_eq!(any_matches(std::slice::from_ref(f), p), m);
        // `limit` bounds a query's answer, never what matches.
        let unlimited = Filter {
            limit: None,
            ..f.clone()
        };
        assert_eq!(unlimited.matches(p), m);
        // A matching filter narrowed to the payload's own id still matches.
        if m {
            let narrowed = Filter {
                ids: Some(vec![p.id.clone()]),
                ..f.clone()
            };
            assert!(narrowed.matches(p));
        }
        let _ = f.names_channel(&p.channel);
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Straight from text into the typed filter, as a query body is read.
    if let Ok(f) = serde_json::from_str::<Filter>(text) {
        if f.validate().is_ok() {
            check(&f);
        }
    }
    // Through a JSON value, as frames and documents carry filters: one
    // filter, or a list of them (a subscription).
    let Ok(value) = serde_json::from_str::<serde_json::Value>(text) else {
        return;
    };
    match value {
        serde_json::Value::Array(items) => {
            let Ok(filters) = items
                .into_iter()
                .map(Filter::from_value)
                .collect::<Result<Vec<_>, _>>()
            else {
                return;
            };
            for f in &filters {
                check(f);
            }
            for p in payloads() {
                assert_eq!(
                    any_matches(&filters, p),
                    filters.iter().any(|f| f.matches(p))
                );
            }
        }
        v => {
            if let Ok(f) = Filter::from_value(v) {
                check(&f);
            }
        }
    }
});
