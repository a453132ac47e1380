//! Communities (PROTOCOL.md 9): channel names, the field rules of governance
//! payloads, and the state every relay and client computes from a
//! community's governance payloads alone. Pure: a function from payloads to
//! a state, with no I/O, so a client computes exactly what a node does.
//!
//! Authority is judged *at* each payload's place in the `(created_at, id)`
//! order. The evaluation keeps each key's rank and the policy as timelines
//! (place → value), so "the rank of K at payload P" is a binary search, and
//! a community of 100,000 governance payloads is one sort and one pass.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::hexfmt::is_hex32;
use crate::payload::valid_channel;
use crate::Payload;

/// The governance kinds (9.2): valid only on a community's root channel.
pub const GOVERNANCE_KINDS: [&str; 5] = ["role", "policy", "invite", "join", "moderate"];

pub fn is_governance_kind(kind: &str) -> bool {
    GOVERNANCE_KINDS.contains(&kind)
}

/// Where a channel sits in a community.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Place<'a> {
    /// `g/<K>/<N>`.
    pub root: &'a str,
    pub owner: &'a str,
    /// The path below the root (`""` on the root itself).
    pub sub: &'a str,
}

/// The community a channel belongs to (9.1): `None` outside `g/`, an error
/// for a `g/` channel of another form.
pub fn place_of(channel: &str) -> Result<Option<Place<'_>>, String> {
    let Some(rest) = channel.strip_prefix("g/") else {
        return Ok(None);
    };
    let mut parts = rest.splitn(3, '/');
    let owner = parts.next().unwrap_or_default();
    let name = parts.next().unwrap_or_default();
    let sub = parts.next().unwrap_or_default();
    if !is_hex32(owner) {
        return Err(
            "a community channel is g/<owner key>/<name>: the owner must be 64 lowercase hex"
                .into(),
        );
    }
    if name.is_empty()
        || name.len() > 32
        || !name
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-'))
    {
        return Err("a community's name is 1-32 characters of [a-z0-9._-]".into());
    }
    let root_len = 2 + owner.len() + 1 + name.len();
    Ok(Some(Place {
        root: &channel[..root_len],
        owner,
        sub,
    }))
}

/// A role of 9.2 (the owner's is not one a payload can give).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Admin,
    Moderator,
    Member,
    Banned,
    None,
}

impl Role {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "admin" => Role::Admin,
            "moderator" => Role::Moderator,
            "member" => Role::Member,
            "banned" => Role::Banned,
            "none" => Role::None,
            _ => return None,
        })
    }

    pub fn rank(self) -> i8 {
        match self {
            Role::Admin => 3,
            Role::Moderator => 2,
            Role::Member => 1,
            Role::None => 0,
            Role::Banned => -1,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Moderator => "moderator",
            Role::Member => "member",
            Role::Banned => "banned",
            Role::None => "none",
        }
    }
}

/// The owner's rank.
pub const OWNER_RANK: i8 = 4;

/// The name of a rank, as `GET /v1/communities` lists it.
pub fn rank_name(rank: i8) -> &'static str {
    match rank {
        OWNER_RANK => "owner",
        3 => "admin",
        2 => "moderator",
        1 => "member",
        -1 => "banned",
        _ => "none",
    }
}

/// Who may post (9.2 `policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    Public,
    Members,
    Moderators,
}

impl Level {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "public" => Level::Public,
            "members" => Level::Members,
            "moderators" => Level::Moderators,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Level::Public => "public",
            Level::Members => "members",
            Level::Moderators => "moderators",
        }
    }

    /// The least rank that may post.
    pub fn min_rank(self) -> i8 {
        match self {
            Level::Public => 0,
            Level::Members => 1,
            Level::Moderators => 2,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Policy {
    pub write: Level,
    /// Per channel path below the root.
    pub channels: BTreeMap<String, Level>,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            write: Level::Members,
            channels: BTreeMap::new(),
        }
    }
}

impl Policy {
    /// The level for a path below the root: the longest entry equal to the
    /// path or to its leading segments, else the community-wide one.
    pub fn level_for(&self, sub: &str) -> Level {
        let mut path = sub;
        while !path.is_empty() {
            if let Some(l) = self.channels.get(path) {
                return *l;
            }
            path = path.rsplit_once('/').map_or("", |(head, _)| head);
        }
        self.write
    }
}

/// A governance payload's meaning, once its field rules held.
#[derive(Debug, Clone)]
enum Governance<'p> {
    Role(Vec<(&'p str, Role)>),
    Policy(Policy),
    Invite {
        code_hash: &'p str,
        uses: u32,
        expires: u64,
        role: Role,
    },
    Join {
        invite: &'p str,
        code: &'p str,
    },
    Moderate(Vec<&'p str>),
}

/// The community field rules of 9.1 and 9.2, for any payload: a malformed
/// `g/` channel, or a governance kind off a root or with malformed tags.
pub fn check_fields(p: &Payload) -> Result<(), String> {
    let place = place_of(&p.channel)?;
    if is_governance_kind(&p.kind) {
        match place {
            Some(pl) if pl.sub.is_empty() => {}
            _ => {
                return Err(format!(
                    "a {} payload is valid only on a community's root channel g/<owner>/<name>",
                    p.kind
                ))
            }
        }
        parse(p)?;
    }
    Ok(())
}

/// Decimal without sign or leading zeros.
fn decimal(s: &str) -> Option<u64> {
    let ok =
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'));
    if ok {
        s.parse().ok()
    } else {
        None
    }
}

/// The tags named `name`, each required to have exactly `len` elements.
fn named<'p>(p: &'p Payload, name: &str, lens: &[usize]) -> Result<Vec<&'p [String]>, String> {
    let tags: Vec<&[String]> = p
        .tags
        .iter()
        .filter(|t| t.first().is_some_and(|n| n == name))
        .map(Vec::as_slice)
        .collect();
    for t in &tags {
        if !lens.contains(&t.len()) {
            return Err(format!(
                "a {} payload's {name:?} tag has {} elements",
                p.kind,
                t.len()
            ));
        }
    }
    Ok(tags)
}

/// Exactly one tag `[name, value]`; its value.
fn one<'p>(p: &'p Payload, name: &str) -> Result<&'p str, String> {
    match named(p, name, &[2])?.as_slice() {
        [t] => Ok(t[1].as_str()),
        [] => Err(format!("a {} payload needs a [{name:?}, ..] tag", p.kind)),
        _ => Err(format!("a {} payload takes one {name:?} tag", p.kind)),
    }
}

fn parse(p: &Payload) -> Result<Governance<'_>, String> {
    match p.kind.as_str() {
        "role" => {
            let tags = named(p, "p", &[3])?;
            if tags.is_empty() {
                return Err("a role payload needs one or more [\"p\", <key>, <role>] tags".into());
            }
            let mut entries = Vec::new();
            for t in tags {
                if !is_hex32(&t[1]) {
                    return Err("a role entry names a key of 64 lowercase hex".into());
                }
                let role = Role::parse(&t[2]).ok_or_else(|| {
                    format!(
                        "unknown role {:?}: admin, moderator, member, banned or none",
                        t[2]
                    )
                })?;
                entries.push((t[1].as_str(), role));
            }
            Ok(Governance::Role(entries))
        }
        "policy" => {
            let mut policy = Policy::default();
            let mut wide = 0;
            for t in named(p, "write", &[2, 3])? {
                let level = Level::parse(&t[1]).ok_or_else(|| {
                    format!(
                        "unknown write level {:?}: public, members or moderators",
                        t[1]
                    )
                })?;
                match t.get(2) {
                    None => {
                        wide += 1;
                        policy.write = level;
                    }
                    Some(sub) => {
                        if !valid_channel(sub) {
                            return Err(format!(
                                "policy path {sub:?} is not a channel path below the root"
                            ));
                        }
                        if policy.channels.insert(sub.clone(), level).is_some() {
                            return Err(format!("policy path {sub:?} is given twice"));
                        }
                    }
                }
            }
            if wide != 1 {
                return Err(
                    "a policy takes exactly one community-wide [\"write\", <level>] tag".into(),
                );
            }
            Ok(Governance::Policy(policy))
        }
        "invite" => {
            let code_hash = one(p, "code")?;
            if !is_hex32(code_hash) {
                return Err("an invite's code is the hex SHA-256 of the code".into());
            }
            let uses = decimal(one(p, "uses")?)
                .filter(|u| (1..=10_000).contains(u))
                .ok_or("an invite's uses are 1-10000, decimal without sign or leading zeros")?;
            let expires = decimal(one(p, "expires")?)
                .ok_or("an invite's expires is a time, decimal without sign or leading zeros")?;
            let role = match named(p, "role", &[2])?.as_slice() {
                [] => Role::Member,
                [t] => match t[1].as_str() {
                    "member" => Role::Member,
                    "moderator" => Role::Moderator,
                    _ => return Err("an invite's role is member or moderator".into()),
                },
                _ => return Err("an invite takes one role tag".into()),
            };
            Ok(Governance::Invite {
                code_hash,
                uses: uses as u32,
                expires,
                role,
            })
        }
        "join" => {
            let invite = one(p, "invite")?;
            if !is_hex32(invite) {
                return Err("a join names its invite by payload id".into());
            }
            Ok(Governance::Join {
                invite,
                code: one(p, "code")?,
            })
        }
        "moderate" => {
            let tags = named(p, "e", &[2])?;
            if tags.is_empty() || tags.iter().any(|t| !is_hex32(&t[1])) {
                return Err("a moderate payload names one or more [\"e\", <payload id>]".into());
            }
            Ok(Governance::Moderate(
                tags.iter().map(|t| t[1].as_str()).collect(),
            ))
        }
        other => Err(format!("{other} is not a governance kind")),
    }
}

/// A place in the community's order.
type Pos = (u64, String);

/// What the evaluation needs of a stored payload to judge it: a store can
/// hand these over without parsing whole payloads.
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    pub id: &'a str,
    pub author: &'a str,
    pub created_at: u64,
    pub kind: &'a str,
    pub channel: &'a str,
}

impl<'a> From<&'a Payload> for Entry<'a> {
    fn from(p: &'a Payload) -> Self {
        Entry {
            id: &p.id,
            author: &p.author,
            created_at: p.created_at,
            kind: &p.kind,
            channel: &p.channel,
        }
    }
}

fn pos(p: &Payload) -> Pos {
    (p.created_at, p.id.clone())
}

/// A registered invite.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invite {
    pub id: String,
    pub created_at: u64,
    code_hash: String,
    pub uses_left: u32,
    pub expires: u64,
    pub role: Role,
}

/// One community's governance, evaluated.
#[derive(Debug, Clone)]
pub struct Evaluation {
    pub root: String,
    pub owner: String,
    /// Per key, its rank from each place on (the place of the payload that set it).
    ranks: HashMap<String, Vec<(Pos, i8)>>,
    policies: Vec<(Pos, Policy)>,
    /// Per moderated id: the moderations naming it (place, rank of their author).
    moderations: HashMap<String, Vec<(Pos, i8)>>,
    /// Every governance payload held, and whether it is authorized at its place.
    authorized: HashMap<String, bool>,
    /// Registered invites, in `(created_at, id)` order.
    invites: Vec<Invite>,
}

impl Evaluation {
    /// Evaluate a community (9.3) from the governance payloads held (any
    /// order; payloads of other communities and other kinds are ignored).
    pub fn new<'a>(root: &str, payloads: impl IntoIterator<Item = &'a Payload>) -> Self {
        let owner = place_of(root)
            .ok()
            .flatten()
            .map_or("", |p| p.owner)
            .to_string();
        let mut gov: Vec<(&Payload, Governance<'_>)> = payloads
            .into_iter()
            .filter(|p| p.channel == root && is_governance_kind(&p.kind))
            .filter_map(|p| parse(p).ok().map(|g| (p, g)))
            .collect();
        gov.sort_by(|a, b| (a.0.created_at, &a.0.id).cmp(&(b.0.created_at, &b.0.id)));
        gov.dedup_by(|a, b| a.0.id == b.0.id);
        let mut ev = Evaluation {
            root: root.to_string(),
            owner,
            ranks: HashMap::new(),
            policies: Vec::new(),
            moderations: HashMap::new(),
            authorized: HashMap::new(),
            invites: Vec::new(),
        };
        let held_invites: HashSet<&str> = gov
            .iter()
            .filter(|(p, _)| p.kind == "invite")
            .map(|(p, _)| p.id.as_str())
            .collect();
        let mut current: HashMap<String, i8> = HashMap::new();
        let mut registered: HashMap<String, usize> = HashMap::new();
        // Joins naming an invite that sorts after them: authorized (with no
        // effect) exactly when that invite turns out authorized.
        let mut later: Vec<(&str, &str)> = Vec::new();
        for (p, g) in &gov {
            let here = pos(p);
            let rank_s = ev.rank_now(&current, &p.author);
            let authorized = match g {
                _ if rank_s >= 2 => true,
                Governance::Role(entries) => {
                    rank_s >= 1
                        && entries
                            .iter()
                            .all(|(t, r)| *t == p.author && *r == Role::None)
                }
                // Only an invite payload held authorizes a join (9.4).
                Governance::Join { invite, .. } if held_invites.contains(invite) => {
                    match ev.authorized.get(*invite) {
                        Some(a) => *a,
                        None => {
                            later.push((p.id.as_str(), invite));
                            true
                        }
                    }
                }
                _ => false,
            };
            ev.authorized.insert(p.id.clone(), authorized);
            if !authorized {
                continue;
            }
            match g {
                Governance::Role(entries) => {
                    for (t, r) in entries {
                        if *t == ev.owner {
                            continue;
                        }
                        let rank_t = ev.rank_now(&current, t);
                        let grant = rank_s >= 2 && rank_t < rank_s && r.rank() < rank_s;
                        let resign = *t == p.author && *r == Role::None && rank_s >= 1;
                        if grant || resign {
                            current.insert(t.to_string(), r.rank());
                            ev.ranks
                                .entry(t.to_string())
                                .or_default()
                                .push((here.clone(), r.rank()));
                        }
                    }
                }
                Governance::Policy(policy) if rank_s >= 3 => {
                    ev.policies.push((here.clone(), policy.clone()));
                }
                Governance::Invite {
                    code_hash,
                    uses,
                    expires,
                    role,
                } if rank_s >= 2 && role.rank() < rank_s => {
                    registered.insert(p.id.clone(), ev.invites.len());
                    ev.invites.push(Invite {
                        id: p.id.clone(),
                        created_at: p.created_at,
                        code_hash: code_hash.to_string(),
                        uses_left: *uses,
                        expires: *expires,
                        role: *role,
                    });
                }
                Governance::Join { invite, code } => {
                    let Some(&i) = registered.get(*invite) else {
                        continue;
                    };
                    let rank_author = ev.rank_now(&current, &p.author);
                    let inv = &mut ev.invites[i];
                    let code_ok = code_hash(code) == inv.code_hash;
                    if p.created_at <= inv.expires
                        && inv.uses_left > 0
                        && code_ok
                        && rank_author == 0
                    {
                        inv.uses_left -= 1;
                        let r = inv.role.rank();
                        current.insert(p.author.clone(), r);
                        ev.ranks
                            .entry(p.author.clone())
                            .or_default()
                            .push((here.clone(), r));
                    }
                }
                Governance::Moderate(targets) if rank_s >= 2 => {
                    for t in targets {
                        ev.moderations
                            .entry(t.to_string())
                            .or_default()
                            .push((here.clone(), rank_s));
                    }
                }
                _ => {}
            }
        }
        for (join, invite) in later {
            let a = ev.authorized.get(invite).copied().unwrap_or(false);
            ev.authorized.insert(join.to_string(), a);
        }
        ev
    }

    fn rank_now(&self, current: &HashMap<String, i8>, key: &str) -> i8 {
        if key == self.owner {
            OWNER_RANK
        } else {
            current.get(key).copied().unwrap_or(0)
        }
    }

    /// A key's rank at a place: after every governance payload before it.
    pub fn rank_at(&self, key: &str, created_at: u64, id: &str) -> i8 {
        if key == self.owner {
            return OWNER_RANK;
        }
        let Some(line) = self.ranks.get(key) else {
            return 0;
        };
        let at = (created_at, id);
        let n = line.partition_point(|((t, i), _)| (*t, i.as_str()) < at);
        if n == 0 {
            0
        } else {
            line[n - 1].1
        }
    }

    /// A key's rank after every governance payload held.
    pub fn final_rank(&self, key: &str) -> i8 {
        if key == self.owner {
            return OWNER_RANK;
        }
        self.ranks
            .get(key)
            .and_then(|l| l.last())
            .map_or(0, |(_, r)| *r)
    }

    /// The policy at a place.
    pub fn policy_at(&self, created_at: u64, id: &str) -> &Policy {
        static DEFAULT: std::sync::OnceLock<Policy> = std::sync::OnceLock::new();
        let at = (created_at, id);
        let n = self
            .policies
            .partition_point(|((t, i), _)| (*t, i.as_str()) < at);
        if n == 0 {
            DEFAULT.get_or_init(Policy::default)
        } else {
            &self.policies[n - 1].1
        }
    }

    /// The policy now.
    pub fn policy(&self) -> Policy {
        self.policies
            .last()
            .map(|(_, p)| p.clone())
            .unwrap_or_default()
    }

    /// Whether a payload of this community is authorized at its place (9.4):
    /// a governance payload as evaluated (`None` when it is not one held), any
    /// other by the write level, a delete always. `Err` says which rule refused.
    pub fn authorize<'a>(&self, p: impl Into<Entry<'a>>) -> Result<(), String> {
        let p: Entry<'a> = p.into();
        if is_governance_kind(p.kind) {
            return match self.authorized.get(p.id) {
                Some(true) => Ok(()),
                _ => Err(self.why_governance_refused(&p)),
            };
        }
        if p.kind == crate::payload::KIND_DELETE {
            return Ok(());
        }
        let sub = place_of(p.channel).ok().flatten().map_or("", |pl| pl.sub);
        let level = self.policy_at(p.created_at, p.id).level_for(sub);
        let rank = self.rank_at(p.author, p.created_at, p.id);
        if rank >= level.min_rank() {
            Ok(())
        } else {
            Err(format!(
                "{}: writing on {} needs the rank of {} (policy {} at this payload's time); this author is {} there",
                self.root,
                p.channel,
                match level {
                    Level::Public => "anyone not banned",
                    Level::Members => "a member",
                    Level::Moderators => "a moderator",
                },
                level.as_str(),
                rank_name(rank)
            ))
        }
    }

    /// A governance payload this evaluation can already tell is not
    /// authorized at its place (9.4), without evaluating the governance again
    /// with it: its author's rank at it depends only on the payloads before
    /// it, which adding it does not change. `None` when only an evaluation
    /// with it can tell: a `join`, an author who is the owner or of rank 2 or
    /// above at it, or a `role` resigning its own author of rank 1 or above.
    /// A refusal costs a lookup instead of a recompute, so a stranger's
    /// `role` payloads cannot make a busy community evaluate again and again.
    pub fn refused_without_recompute(&self, p: &Payload) -> Option<String> {
        if !is_governance_kind(&p.kind) || p.kind == "join" {
            return None;
        }
        let rank = self.rank_at(&p.author, p.created_at, &p.id);
        if rank >= Role::Moderator.rank() {
            return None;
        }
        let resigns = p.kind == "role"
            && rank >= Role::Member.rank()
            && p.tags
                .iter()
                .filter(|t| t.first().is_some_and(|n| n == "p"))
                .all(|t| t.len() == 3 && t[1] == p.author && t[2] == "none");
        if resigns {
            return None;
        }
        Some(self.why_governance_refused(&Entry::from(p)))
    }

    fn why_governance_refused(&self, p: &Entry<'_>) -> String {
        let rank = self.rank_at(p.author, p.created_at, p.id);
        match p.kind {
            "join" => format!(
                "{}: a join is authorized by an invite this node holds and shows; the one it names is not",
                self.root
            ),
            _ => format!(
                "{}: a {} payload needs the owner or a moderator or above at its time; its author is {} there",
                self.root,
                p.kind,
                rank_name(rank)
            ),
        }
    }

    /// Whether a stored payload of this community is shown: authorized at
    /// its place, and (for other kinds) neither moderated nor by a key whose
    /// final rank is `banned`.
    pub fn shown<'a>(&self, p: impl Into<Entry<'a>>) -> bool {
        let p: Entry<'a> = p.into();
        if self.authorize(p).is_err() {
            return false;
        }
        if is_governance_kind(p.kind) {
            return true;
        }
        if self.final_rank(p.author) == Role::Banned.rank() {
            return false;
        }
        let moderated = self.moderations.get(p.id).is_some_and(|ms| {
            ms.iter()
                .any(|((t, i), r)| self.rank_at(p.author, *t, i) < *r)
        });
        !moderated
    }

    /// Every registered invite with the uses it has left, in order.
    pub fn invites(&self) -> &[Invite] {
        &self.invites
    }

    /// Keys with a rank other than 0 now (the owner not among them).
    pub fn roles(&self) -> BTreeMap<String, i8> {
        self.ranks
            .iter()
            .filter_map(|(k, l)| l.last().map(|(_, r)| (k.clone(), *r)))
            .filter(|(_, r)| *r != 0)
            .collect()
    }

    /// `GET /v1/communities/{owner}/{name}` (9.4) at time `now`.
    pub fn answer(&self, now: u64) -> Value {
        let mut members: Vec<(i8, String)> =
            self.roles().into_iter().map(|(k, r)| (r, k)).collect();
        members.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        let mut listed = vec![json!({"key": self.owner, "role": "owner"})];
        listed.extend(
            members
                .iter()
                .map(|(r, k)| json!({"key": k, "role": rank_name(*r)})),
        );
        let policy = self.policy();
        let invites: Vec<Value> = self
            .invites
            .iter()
            .filter(|i| i.uses_left > 0 && i.expires >= now)
            .map(|i| json!({"id": i.id, "uses_left": i.uses_left, "expires": i.expires, "role": i.role.as_str()}))
            .collect();
        json!({
            "community": self.root,
            "owner": self.owner,
            "policy": {"write": policy.write, "channels": policy.channels},
            "members": listed,
            "invites": invites,
        })
    }
}

/// The hex SHA-256 of an invite code, as an `invite` payload's `code` tag carries it.
pub fn code_hash(code: &str) -> String {
    hex::encode(Sha256::digest(code.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_belong_to_communities_by_their_first_three_segments() {
        let k = "ab".repeat(32);
        let root = format!("g/{k}/club");
        let p = place_of(&root).unwrap().unwrap();
        assert_eq!((p.root, p.owner, p.sub), (root.as_str(), k.as_str(), ""));
        let deep = format!("{root}/news/local");
        assert_eq!(place_of(&deep).unwrap().unwrap().sub, "news/local");
        assert_eq!(place_of("gx/a").unwrap(), None);
        assert!(place_of("g/abc/club").is_err());
        assert!(place_of(&format!("g/{k}")).is_err());
        assert!(place_of(&format!("g/{k}/{}", "n".repeat(33))).is_err());
    }

    #[test]
    fn a_policy_entry_covers_its_path_and_below_not_a_longer_name() {
        let mut p = Policy::default();
        p.channels.insert("news".into(), Level::Moderators);
        p.write = Level::Public;
        assert_eq!(p.level_for("news"), Level::Moderators);
        assert_eq!(p.level_for("news/local"), Level::Moderators);
        assert_eq!(p.level_for("newsroom"), Level::Public);
        assert_eq!(p.level_for(""), Level::Public);
    }

    fn role(key: &crate::NodeKey, root: &str, at: u64, entries: &[(&str, &str)]) -> Payload {
        Payload::sign(
            key,
            crate::payload::Draft {
                seq: 1,
                prev: None,
                created_at: at,
                kind: "role".into(),
                channel: root.into(),
                tags: entries
                    .iter()
                    .map(|(k, r)| vec!["p".to_string(), k.to_string(), r.to_string()])
                    .collect(),
                content: String::new(),
            },
        )
    }

    #[test]
    fn an_admin_cannot_change_another_admin_nor_the_owner() {
        let (owner, a, b) = (
            crate::NodeKey::generate(),
            crate::NodeKey::generate(),
            crate::NodeKey::generate(),
        );
        let root = format!("g/{}/club", owner.public_hex());
        let (ka, kb, ko) = (a.public_hex(), b.public_hex(), owner.public_hex());
        let grants = role(&owner, &root, 10, &[(&ka, "admin"), (&kb, "admin")]);
        let demote = role(&a, &root, 20, &[(&kb, "member"), (&ko, "banned")]);
        let ev = Evaluation::new(&root, [&grants, &demote]);
        assert_eq!((ev.final_rank(&kb), ev.final_rank(&ko)), (3, OWNER_RANK));
        assert!(
            ev.authorize(&demote).is_ok(),
            "stored and shown, with no effect"
        );
        assert_eq!(
            ev.rank_at(&ka, 10, &grants.id),
            0,
            "not yet at the grant itself"
        );
        assert_eq!(ev.rank_at(&ka, 11, &grants.id), 3);
    }

    #[test]
    fn decimals_have_no_sign_or_leading_zero() {
        assert_eq!(decimal("0"), Some(0));
        assert_eq!(decimal("10"), Some(10));
        for bad in ["", "01", "+1", "-1", " 1", "1.0", "1e3", "0x1"] {
            assert_eq!(decimal(bad), None, "{bad}");
        }
    }
}
