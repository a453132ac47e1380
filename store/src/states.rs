//! The states a peer, its forwarding and an outbox item can be in. The database keeps them as
//! text with CHECK constraints (migration 0005); this pair of `Display` and
//! `FromStr` is the only place their spellings live, and the predicates here
//! are the only place that decides what each state allows.

use std::fmt;
use std::str::FromStr;

/// A peer's standing with this node (PROTOCOL.md 5.2, 5.3, 7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(into = "&'static str", try_from = "String")]
pub enum PeerStatus {
    /// Announced itself while the operator requires approval.
    Pending,
    Active,
    /// Five deliveries in a row failed; still probed, synced and polled.
    Unreachable,
    /// Chosen by an operator: nothing is accepted from it or sent to it.
    Blocked,
    /// Its document came signed by another key; waits for an operator.
    KeyChanged,
}

impl PeerStatus {
    pub const ALL: [PeerStatus; 5] = [
        Self::Pending,
        Self::Active,
        Self::Unreachable,
        Self::Blocked,
        Self::KeyChanged,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Active => "active",
            Self::Unreachable => "unreachable",
            Self::Blocked => "blocked",
            Self::KeyChanged => "key_changed",
        }
    }

    /// Its inbox, sync and fetch requests are served.
    pub fn accepts_inbox(self) -> bool {
        matches!(self, Self::Active | Self::Unreachable)
    }

    /// Payloads are routed to it and its outbox is delivered (an unreachable
    /// peer keeps its queue: the delivery loop probes it until it answers).
    pub fn receives_forwards(self) -> bool {
        matches!(self, Self::Active | Self::Unreachable)
    }

    /// The scheduled sync reconciles with it: sync is how a partition heals,
    /// so an unreachable peer is tried too (PROTOCOL.md 5.5).
    pub fn is_sync_target(self) -> bool {
        matches!(self, Self::Active | Self::Unreachable)
    }

    /// The scheduled poll fetches its document (every peer not blocked, 5.3).
    pub fn is_polled(self) -> bool {
        !matches!(self, Self::Blocked)
    }

    /// Listed in `GET /v1/federation/peers`.
    pub fn is_shared(self) -> bool {
        matches!(self, Self::Active)
    }

    /// Waits for an operator's approval (the dashboard offers "approve").
    pub fn awaits_operator(self) -> bool {
        matches!(self, Self::Pending | Self::KeyChanged)
    }
}

impl From<PeerStatus> for &'static str {
    fn from(s: PeerStatus) -> Self {
        s.as_str()
    }
}

impl fmt::Display for PeerStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A spelling that is none of the states.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown state {0:?}")]
pub struct UnknownState(pub String);

impl FromStr for PeerStatus {
    type Err = UnknownState;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| UnknownState(s.to_string()))
    }
}

impl TryFrom<String> for PeerStatus {
    type Error = UnknownState;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

/// An outbox item's state (PROTOCOL.md 5.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(into = "&'static str", try_from = "String")]
pub enum OutboxState {
    /// Waiting for its next attempt.
    Pending,
    /// Given up after `max_delivery_age_secs`; kept for the operator to retry.
    Dead,
}

impl OutboxState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Dead => "dead",
        }
    }
}

impl From<OutboxState> for &'static str {
    fn from(s: OutboxState) -> Self {
        s.as_str()
    }
}

impl fmt::Display for OutboxState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for OutboxState {
    type Err = UnknownState;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pending" => Ok(Self::Pending),
            "dead" => Ok(Self::Dead),
            _ => Err(UnknownState(s.to_string())),
        }
    }
}

impl TryFrom<String> for OutboxState {
    type Error = UnknownState;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

/// How this node forwards to a peer (PROTOCOL.md 5.6): the whole payload
/// through its inbox (`eager`), or an offer of the id it may take up (`lazy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(into = "&'static str", try_from = "String")]
pub enum Forwarding {
    Eager,
    Lazy,
}

impl Forwarding {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Eager => "eager",
            Self::Lazy => "lazy",
        }
    }
}

impl From<Forwarding> for &'static str {
    fn from(f: Forwarding) -> Self {
        f.as_str()
    }
}

impl fmt::Display for Forwarding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Forwarding {
    type Err = UnknownState;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "eager" => Ok(Self::Eager),
            "lazy" => Ok(Self::Lazy),
            _ => Err(UnknownState(s.to_string())),
        }
    }
}

impl TryFrom<String> for Forwarding {
    type Error = UnknownState;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_round_trips() {
        for s in PeerStatus::ALL {
            assert_eq!(s.to_string().parse::<PeerStatus>(), Ok(s));
        }
        for f in [Forwarding::Eager, Forwarding::Lazy] {
            assert_eq!(f.to_string().parse::<Forwarding>(), Ok(f));
        }
        assert!("Lazy".parse::<Forwarding>().is_err());
        for s in [OutboxState::Pending, OutboxState::Dead] {
            assert_eq!(s.to_string().parse::<OutboxState>(), Ok(s));
        }
        assert!("Active".parse::<PeerStatus>().is_err());
        // JSON uses the same spellings, both ways.
        let json = serde_json::to_string(&PeerStatus::KeyChanged).unwrap();
        assert_eq!(json, "\"key_changed\"");
        assert_eq!(
            serde_json::from_str::<PeerStatus>(&json).unwrap(),
            PeerStatus::KeyChanged
        );
        assert!(serde_json::from_str::<OutboxState>("\"lost\"").is_err());
        assert!("gone".parse::<OutboxState>().is_err());
    }

    #[test]
    fn only_active_and_unreachable_peers_exchange_payloads() {
        use PeerStatus::*;
        for s in PeerStatus::ALL {
            let live = matches!(s, Active | Unreachable);
            assert_eq!(s.accepts_inbox(), live, "{s}");
            assert_eq!(s.receives_forwards(), live, "{s}");
            assert_eq!(s.is_sync_target(), live, "{s}");
        }
        assert!(!Blocked.is_polled());
        assert!(KeyChanged.is_polled());
        assert!(Active.is_shared() && !Unreachable.is_shared());
    }
}
