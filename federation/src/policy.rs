//! Which peers get whole payloads and which get offers (PROTOCOL.md 5.6), in
//! the manner of Plumtree (Leitão, Pereira, Rodrigues 2007), decided by the
//! sender alone: every link starts eager; a peer whose inbox answers say
//! that most of what this node pushed it were duplicates gets them by other
//! links first, so the link is redundant and becomes lazy; a lazy peer that
//! wants an offered id lacked it after the offer delay, so no eager path
//! brought it in time: it becomes eager again. Each direction of a link is
//! judged by its sender only: that the peer's own pushes arrive here as
//! duplicates says nothing about whether ours reach it first. The eager links
//! left form a sparse overlay that carries each payload about once to each
//! node; offers over the others repair what it misses, so nothing is lost
//! either way.

use std::collections::HashMap;
use std::sync::Mutex;

/// Forwarded items over one link after which it is judged, at least; each
/// window's length is drawn between this and three times it, so that two
/// links bringing a node the same payloads are not judged at the same
/// moment: the first pruned leaves the other bringing everything first.
pub const WINDOW: u64 = 8;
/// Redundant windows in a row that make a link lazy. One is not enough: the
/// window of a link on a cycle whose other link was pruned a moment ago
/// still holds the duplicates of before; the next one shows whether they
/// stopped. (Two links of one cycle pruned at once could cut the overlay,
/// which only an offer taken up mends, a delay and two requests later.)
pub const STRIKES: u8 = 2;
/// The share of duplicates in a window at or above which a link is redundant.
pub const REDUNDANT_SHARE: f64 = 0.5;
/// Forwarded items a grafted link carries before it is judged again: the
/// duplicates around a graft (the payloads in flight on other paths) must
/// not make it lazy at once.
pub const GRACE: u64 = 4 * WINDOW;

/// What forwarding over one link brought since it was last judged.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Tally {
    new: u64,
    duplicate: u64,
    /// Items still to pass before the link is judged (after a graft).
    grace: u64,
    /// This window's length (0: not drawn yet).
    window: u64,
    /// Redundant windows in a row so far.
    strikes: u8,
}

/// The tallies of every link, kept in memory: a restart starts them over
/// (the links' forwarding modes themselves are in the database).
#[derive(Debug)]
pub struct Links {
    tallies: Mutex<HashMap<String, Tally>>,
    /// Window lengths are drawn from this range.
    windows: std::ops::RangeInclusive<u64>,
}

impl Default for Links {
    fn default() -> Self {
        Self::with_windows(WINDOW..=3 * WINDOW)
    }
}

impl Links {
    pub fn with_windows(windows: std::ops::RangeInclusive<u64>) -> Self {
        Self {
            tallies: Mutex::default(),
            windows,
        }
    }

    /// Count `new` and `duplicate` items pushed to `peer`, as its inbox
    /// answers counted them. True when this closes a window in which the link was
    /// redundant: the caller makes it lazy.
    pub fn observe(&self, peer: &str, new: u64, duplicate: u64) -> bool {
        if new + duplicate == 0 {
            return false;
        }
        let mut tallies = self.tallies.lock().expect("lock");
        let t = tallies.entry(peer.to_string()).or_default();
        if t.grace > 0 {
            t.grace = t.grace.saturating_sub(new + duplicate);
            return false;
        }
        if t.window == 0 {
            t.window = rand::Rng::gen_range(&mut rand::thread_rng(), self.windows.clone());
        }
        t.new += new;
        t.duplicate += duplicate;
        let total = t.new + t.duplicate;
        if total < t.window {
            return false;
        }
        let redundant = t.duplicate as f64 >= REDUNDANT_SHARE * total as f64;
        let strikes = if redundant { t.strikes + 1 } else { 0 };
        *t = Tally::default();
        if strikes < STRIKES {
            t.strikes = strikes;
            return false;
        }
        true
    }

    /// The link was grafted: its tally starts over after a grace.
    pub fn grafted(&self, peer: &str) {
        self.tallies.lock().expect("lock").insert(
            peer.to_string(),
            Tally {
                grace: GRACE,
                ..Tally::default()
            },
        );
    }

    /// Forget the link's tally (the peer was forgotten).
    pub fn reset(&self, peer: &str) {
        self.tallies.lock().expect("lock").remove(peer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fill `windows` windows of `WINDOW` items, `dup` of each duplicates;
    /// whether the last one made the link lazy.
    fn windows(links: &Links, peer: &str, windows: u64, dup: u64) -> bool {
        let mut lazy = false;
        for _ in 0..windows {
            lazy = links.observe(peer, WINDOW - dup, dup);
        }
        lazy
    }

    #[test]
    fn a_link_is_judged_once_a_window_is_full() {
        let links = Links::with_windows(WINDOW..=WINDOW);
        // Duplicates short of a window decide nothing.
        assert!(!links.observe("p", 0, WINDOW - 1));
        assert!(
            !links.observe("p", 0, 1),
            "one redundant window is a strike"
        );
        assert!(!links.observe("p", 0, WINDOW - 1));
        assert!(links.observe("p", 0, 1), "two in a row make it lazy");
        // It starts over.
        assert!(!windows(&links, "p", 1, WINDOW));
        links.reset("p");
        assert!(!windows(&links, "p", 5, 0), "windows of new items never do");
        assert!(!links.observe("p", 0, 0));
    }

    #[test]
    fn a_window_that_is_not_redundant_clears_the_strikes() {
        let links = Links::with_windows(WINDOW..=WINDOW);
        assert!(!windows(&links, "p", 1, WINDOW));
        assert!(!windows(&links, "p", 1, 1), "the duplicates stopped");
        assert!(!windows(&links, "p", 1, WINDOW));
        assert!(windows(&links, "p", 1, WINDOW));
    }

    #[test]
    fn the_share_of_duplicates_decides() {
        let links = Links::with_windows(WINDOW..=WINDOW);
        let half = WINDOW / 2;
        assert!(windows(&links, "p", 2, half), "half is redundant");
        assert!(!windows(&links, "p", 2, half - 1));
        // Each link on its own.
        assert!(!windows(&links, "q", 1, WINDOW));
        assert!(!windows(&links, "p", 1, WINDOW));
        assert!(windows(&links, "q", 1, WINDOW));
    }

    #[test]
    fn window_lengths_are_drawn_from_their_range() {
        let links = Links::with_windows(20..=30);
        let mut lengths = std::collections::BTreeSet::new();
        for _ in 0..200 {
            // Two windows of duplicates, each of 20 to 30 items.
            let mut n = 0;
            loop {
                n += 1;
                if links.observe("p", 0, 1) {
                    break;
                }
            }
            assert!((40..=60).contains(&n), "{n}");
            lengths.insert(n);
            links.reset("p");
        }
        assert!(lengths.len() > 1, "not one fixed length: {lengths:?}");
    }

    #[test]
    fn a_grafted_link_is_not_judged_during_its_grace() {
        let links = Links::with_windows(WINDOW..=WINDOW);
        links.grafted("p");
        assert!(!links.observe("p", 0, GRACE - 1));
        assert!(!links.observe("p", 0, 1), "the grace ends");
        assert!(!windows(&links, "p", 1, WINDOW));
        assert!(windows(&links, "p", 1, WINDOW), "then windows are judged");
    }
}
