//! Filters (PROTOCOL.md 3): what a query, a subscription or a peer's preference selects.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{ProtocolError, Result};
use crate::hexfmt::is_hex32;
use crate::payload::{valid_channel, valid_kind, valid_tag_name, Payload};

/// One filter. Absent fields do not constrain; an empty list matches nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ids: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authors: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kinds: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<BTreeMap<String, Vec<String>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
}

/// A channel entry of a filter: an exact channel, or a prefix written `prefix/*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelPattern<'a> {
    Exact(&'a str),
    /// Holds `prefix/` (with the slash) so a match is one `starts_with`.
    Below(&'a str),
}

impl<'a> ChannelPattern<'a> {
    pub fn parse(s: &'a str) -> Option<Self> {
        if let Some(prefix) = s.strip_suffix("/*") {
            valid_channel(prefix).then(|| ChannelPattern::Below(&s[..s.len() - 1]))
        } else {
            valid_channel(s).then_some(ChannelPattern::Exact(s))
        }
    }

    pub fn matches(&self, channel: &str) -> bool {
        match self {
            ChannelPattern::Exact(c) => *c == channel,
            ChannelPattern::Below(prefix) => channel.starts_with(prefix),
        }
    }
}

impl Filter {
    /// Parse one filter from JSON, refusing unknown fields and malformed values.
    pub fn from_value(v: serde_json::Value) -> Result<Self> {
        let f: Filter = serde_json::from_value(v)
            .map_err(|e| ProtocolError::bad_request(format!("filter: {e}")))?;
        f.validate()?;
        Ok(f)
    }

    /// Refuse values that could never match or that an index would choke on.
    pub fn validate(&self) -> Result<()> {
        fn bad(m: impl Into<String>) -> ProtocolError {
            ProtocolError::bad_request(m)
        }
        // Numbers are integers below 2^53 (PROTOCOL.md 1): above, RFC 8785
        // writes two of them the same, so a signed document holding a filter
        // would verify with either.
        for (name, n) in [
            ("since", self.since),
            ("until", self.until),
            ("limit", self.limit),
        ] {
            if n.is_some_and(|n| n >= MAX_SAFE) {
                return Err(bad(format!("{name} must be below 2^53")));
            }
        }
        for (name, list) in [("ids", &self.ids), ("authors", &self.authors)] {
            if let Some(list) = list {
                if let Some(v) = list.iter().find(|v| !is_hex32(v)) {
                    return Err(bad(format!(
                        "{name}: {v:?} is not 64 lowercase hex characters"
                    )));
                }
            }
        }
        if let Some(kinds) = &self.kinds {
            if let Some(k) = kinds.iter().find(|k| !valid_kind(k)) {
                return Err(bad(format!("kinds: {k:?} is not a valid kind")));
            }
        }
        if let Some(channels) = &self.channels {
            if let Some(c) = channels.iter().find(|c| ChannelPattern::parse(c).is_none()) {
                return Err(bad(format!(
                    "channels: {c:?} is neither a channel nor a channel followed by /*"
                )));
            }
        }
        if let Some(tags) = &self.tags {
            if let Some(name) = tags.keys().find(|n| !valid_tag_name(n)) {
                return Err(bad(format!("tags: {name:?} is not a valid tag name")));
            }
        }
        for list in [&self.ids, &self.authors, &self.kinds, &self.channels] {
            if list.as_ref().is_some_and(|l| l.len() > 1000) {
                return Err(bad("a filter list holds at most 1000 values"));
            }
        }
        Ok(())
    }

    /// Values over all of the filter's lists: ids, authors, kinds, channels
    /// and every tag's values. What matching one payload costs grows with it.
    pub fn value_count(&self) -> usize {
        let lists = [&self.ids, &self.authors, &self.kinds, &self.channels];
        let tags = self
            .tags
            .as_ref()
            .map_or(0, |t| t.values().map(Vec::len).sum());
        lists
            .iter()
            .map(|l| l.as_ref().map_or(0, Vec::len))
            .sum::<usize>()
            + tags
    }

    /// Refuse a filter holding more than `max` values (`max_filter_values`,
    /// PROTOCOL.md 10) as `bad_request`.
    pub fn check_values(&self, max: usize) -> Result<()> {
        let n = self.value_count();
        if n > max {
            return Err(ProtocolError::bad_request(format!(
                "a filter holds at most {max} values over its lists (ids, authors, kinds, \
                 channels, tag values); this one holds {n}"
            )));
        }
        Ok(())
    }

    pub fn matches(&self, p: &Payload) -> bool {
        fn in_list(list: &Option<Vec<String>>, v: &str) -> bool {
            list.as_ref().is_none_or(|l| l.iter().any(|x| x == v))
        }
        in_list(&self.ids, &p.id)
            && in_list(&self.authors, &p.author)
            && in_list(&self.kinds, &p.kind)
            && self.channels.as_ref().is_none_or(|cs| {
                cs.iter()
                    .any(|c| ChannelPattern::parse(c).is_some_and(|pat| pat.matches(&p.channel)))
            })
            && self.tags.as_ref().is_none_or(|tags| {
                tags.iter()
                    .all(|(name, values)| p.tag_values(name).any(|v| values.iter().any(|x| x == v)))
            })
            && self.since.is_none_or(|s| p.created_at >= s)
            && self.until.is_none_or(|u| p.created_at <= u)
    }

    /// True when the filter names a `channels` list with a pattern matching `channel`:
    /// signals go only to subscribers that asked for a channel explicitly.
    pub fn names_channel(&self, channel: &str) -> bool {
        self.channels.as_ref().is_some_and(|cs| {
            cs.iter()
                .any(|c| ChannelPattern::parse(c).is_some_and(|pat| pat.matches(channel)))
        })
    }
}

/// One past the largest integer JSON numbers carry exactly (2^53).
const MAX_SAFE: u64 = 1 << 53;

/// A list of filters matches when any of them does.
pub fn any_matches(filters: &[Filter], p: &Payload) -> bool {
    filters.iter().any(|f| f.matches(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_pattern_matches_below_but_not_itself() {
        let pat = ChannelPattern::parse("plural/*").unwrap();
        assert!(pat.matches("plural/a"));
        assert!(pat.matches("plural/a/b"));
        assert!(!pat.matches("plural"));
        assert!(!pat.matches("pluralx/a"));
    }

    #[test]
    fn values_are_counted_over_every_list_tags_included() {
        let v = serde_json::json!({
            "kinds": ["post", "note"],
            "channels": ["a"],
            "tags": {"t": ["x", "y", "z"], "p": ["q"]},
        });
        let f = Filter::from_value(v).unwrap();
        assert_eq!(f.value_count(), 7);
        assert!(f.check_values(7).is_ok());
        let err = f.check_values(6).unwrap_err();
        assert_eq!(err.code, crate::ErrorCode::BadRequest);
        assert!(err.message.contains("this one holds 7"), "{}", err.message);
        assert_eq!(Filter::default().value_count(), 0);
    }

    #[test]
    fn malformed_filters_are_bad_requests() {
        for bad in [
            r#"{"authors":["ABC"]}"#,
            r#"{"channels":["/x"]}"#,
            r#"{"kinds":[""]}"#,
            r#"{"nope":1}"#,
            r#"{"tags":{"T":["x"]}}"#,
            r#"{"since":-1}"#,
            r#"{"since":9007199254740992}"#,
            r#"{"limit":9007199254740993}"#,
        ] {
            let v = serde_json::from_str(bad).unwrap();
            assert!(Filter::from_value(v).is_err(), "{bad}");
        }
    }
}
