//! `meshrelay community`: sign and publish a community's governance payloads
//! (PROTOCOL.md 9.2), and show a community's state as computed here from the
//! governance payloads a relay serves (9.3), trusting no relay's word.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{anyhow, bail};
use clap::{Args, Subcommand};
use comfy_table::{presets::UTF8_BORDERS_ONLY, Table};
use meshrelay_protocol::community::{code_hash, place_of, Evaluation, Level};
use rand::RngCore;

use super::client::Author;

const DEFAULT_RELAY: &str = "http://127.0.0.1:7700";

#[derive(Debug, Args)]
pub struct CommunityArgs {
    #[command(subcommand)]
    pub command: CommunityCommand,
}

/// Who signs and where it goes, for every command that publishes.
#[derive(Debug, Args)]
pub struct Signer {
    /// Relay base URL (repeatable); the payload goes to each.
    #[arg(long = "relay", env = "MESHRELAY_RELAY", value_delimiter = ',', default_value = DEFAULT_RELAY)]
    pub relays: Vec<String>,
    /// File holding the signer's secret seed (as written by `keygen --out`).
    #[arg(long, env = "MESHRELAY_KEY_FILE")]
    pub key: PathBuf,
    /// The receipts store (default: the signer's under the user's data directory).
    #[arg(long, env = "MESHRELAY_RECEIPTS")]
    pub receipts: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum CommunityCommand {
    /// Create the community g/<your key>/<NAME>: publish its owner's first policy.
    Create {
        name: String,
        /// Who may post: public, members or moderators.
        #[arg(long, default_value = "members")]
        write: String,
        #[command(flatten)]
        signer: Signer,
    },
    /// Show members, policy and open invites, computed from the governance
    /// payloads the relay serves (each verified).
    Show {
        /// g/<owner>/<name>, or <owner>/<name>.
        community: String,
        #[arg(long, env = "MESHRELAY_RELAY", default_value = DEFAULT_RELAY)]
        relay: String,
        /// Print the state as `GET /v1/communities` answers it.
        #[arg(long)]
        json: bool,
    },
    /// Give KEY a role: admin, moderator, member, banned or none.
    Grant {
        community: String,
        /// The key given the role.
        #[arg(value_name = "KEY")]
        member: String,
        role: String,
        #[command(flatten)]
        signer: Signer,
    },
    /// Ban KEY (role banned): its posts are hidden while the ban stands.
    Ban {
        community: String,
        #[arg(value_name = "KEY")]
        member: String,
        #[command(flatten)]
        signer: Signer,
    },
    /// Lift a ban (role none).
    Unban {
        community: String,
        #[arg(value_name = "KEY")]
        member: String,
        #[command(flatten)]
        signer: Signer,
    },
    /// Replace the policy: who may post, community-wide and per channel.
    Policy {
        community: String,
        /// Community-wide level: public, members or moderators.
        #[arg(long)]
        write: String,
        /// A channel path below the root and its level, as SUB=LEVEL (repeatable).
        #[arg(long = "channel")]
        channels: Vec<String>,
        #[command(flatten)]
        signer: Signer,
    },
    /// Make an invite; prints its random code and the invite's id.
    Invite {
        community: String,
        /// How many may redeem it (1-10000).
        #[arg(long, default_value_t = 1)]
        uses: u32,
        /// How long it stays valid: <n>s, m, h or d.
        #[arg(long, default_value = "7d")]
        expires_in: String,
        /// The role it gives: member or moderator.
        #[arg(long, default_value = "member")]
        role: String,
        #[command(flatten)]
        signer: Signer,
    },
    /// Redeem an invite.
    Join {
        community: String,
        /// The invite payload's id.
        #[arg(long)]
        invite: String,
        #[arg(long)]
        code: String,
        #[command(flatten)]
        signer: Signer,
    },
    /// Hide payloads of the community (those by keys below your rank).
    Moderate {
        community: String,
        /// Payload ids.
        #[arg(required = true)]
        ids: Vec<String>,
        #[command(flatten)]
        signer: Signer,
    },
}

/// `g/<owner>/<name>` from either spelling, checked.
fn root(community: &str) -> anyhow::Result<String> {
    let full = if community.starts_with("g/") {
        community.to_string()
    } else {
        format!("g/{community}")
    };
    match place_of(&full).map_err(|e| anyhow!("{community:?}: {e}"))? {
        Some(p) if p.sub.is_empty() => Ok(full),
        _ => bail!("{community:?} is not a community: g/<owner key>/<name>"),
    }
}

fn tag(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn level(s: &str) -> anyhow::Result<&str> {
    Level::parse(s)
        .map(|_| s)
        .ok_or_else(|| anyhow!("{s:?} is not a write level: public, members or moderators"))
}

async fn publish(
    signer: &Signer,
    root: &str,
    kind: &str,
    tags: Vec<Vec<String>>,
    not_before: u64,
) -> anyhow::Result<ExitCode> {
    let author = Author::load(&signer.key, signer.receipts.as_deref())?;
    let out = author
        .publish(
            &signer.relays,
            kind.into(),
            root.into(),
            tags,
            String::new(),
            not_before,
        )
        .await?;
    Ok(out.exit_code())
}

pub async fn run(args: CommunityArgs) -> anyhow::Result<ExitCode> {
    use CommunityCommand::*;
    match args.command {
        Create {
            name,
            write,
            signer,
        } => {
            let author = Author::load(&signer.key, signer.receipts.as_deref())?;
            let root = root(&format!("{}/{name}", author.public_hex()))?;
            let out = author
                .publish(
                    &signer.relays,
                    "policy".into(),
                    root.clone(),
                    vec![tag(&["write", level(&write)?])],
                    String::new(),
                    0,
                )
                .await?;
            println!("community {root}");
            Ok(out.exit_code())
        }
        Show {
            community,
            relay,
            json,
        } => show(&root(&community)?, &relay, json).await,
        Grant {
            community,
            member,
            role,
            signer,
        } => {
            publish(
                &signer,
                &root(&community)?,
                "role",
                vec![tag(&["p", &member, &role])],
                0,
            )
            .await
        }
        Ban {
            community,
            member,
            signer,
        } => {
            publish(
                &signer,
                &root(&community)?,
                "role",
                vec![tag(&["p", &member, "banned"])],
                0,
            )
            .await
        }
        Unban {
            community,
            member,
            signer,
        } => {
            publish(
                &signer,
                &root(&community)?,
                "role",
                vec![tag(&["p", &member, "none"])],
                0,
            )
            .await
        }
        Policy {
            community,
            write,
            channels,
            signer,
        } => {
            let mut tags = vec![tag(&["write", level(&write)?])];
            for c in &channels {
                let (sub, l) = c
                    .split_once('=')
                    .ok_or_else(|| anyhow!("--channel takes SUB=LEVEL, got {c:?}"))?;
                tags.push(tag(&["write", level(l)?, sub]));
            }
            publish(&signer, &root(&community)?, "policy", tags, 0).await
        }
        Invite {
            community,
            uses,
            expires_in,
            role,
            signer,
        } => {
            let root = root(&community)?;
            let secs = super::sync::parse_duration(&expires_in)?;
            let expires = meshrelay_protocol::clock::now_wire_secs() + secs;
            let mut raw = [0u8; 16];
            rand::rngs::OsRng.fill_bytes(&mut raw);
            let code = hex::encode(raw);
            let tags = vec![
                tag(&["code", &code_hash(&code)]),
                tag(&["uses", &uses.to_string()]),
                tag(&["expires", &expires.to_string()]),
                tag(&["role", &role]),
            ];
            let author = Author::load(&signer.key, signer.receipts.as_deref())?;
            let out = author
                .publish(
                    &signer.relays,
                    "invite".into(),
                    root,
                    tags,
                    String::new(),
                    0,
                )
                .await?;
            println!("code\t{code}\ninvite\t{}", out.payload.id);
            Ok(out.exit_code())
        }
        Join {
            community,
            invite,
            code,
            signer,
        } => {
            // The join must sort after the invite it redeems (9.3 judges it
            // at its place): never in the invite's second or before.
            let mut not_before = 0;
            for r in &signer.relays {
                if let Ok(Some(p)) = super::client::relay(r)?.get(&invite).await {
                    not_before = p.created_at + 1;
                    break;
                }
            }
            publish(
                &signer,
                &root(&community)?,
                "join",
                vec![tag(&["invite", &invite]), tag(&["code", &code])],
                not_before,
            )
            .await
        }
        Moderate {
            community,
            ids,
            signer,
        } => {
            let tags = ids.iter().map(|id| tag(&["e", id])).collect();
            publish(&signer, &root(&community)?, "moderate", tags, 0).await
        }
    }
}

async fn show(root: &str, relay: &str, json: bool) -> anyhow::Result<ExitCode> {
    let c = super::client::relay(relay)?;
    let (evaluation, read) = c.community(root).await?;
    if read == 0 && c.community_answer(root).await?.is_none() {
        bail!("{relay} holds no payload of {root}");
    }
    let now = meshrelay_protocol::clock::now_wire_secs();
    let answer = evaluation.answer(now);
    if json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
    } else {
        print_state(root, &evaluation, &answer, read);
    }
    // The relay's own answer is a claim; what was computed here is checked.
    if let Some(theirs) = c.community_answer(root).await? {
        if theirs != answer {
            eprintln!("warning: {relay}'s own answer differs from the state computed from its governance payloads");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_state(root: &str, evaluation: &Evaluation, answer: &serde_json::Value, read: usize) {
    println!("{root}\n(computed from {read} governance payloads)");
    let policy = evaluation.policy();
    let mut t = Table::new();
    t.load_preset(UTF8_BORDERS_ONLY)
        .set_header(["channel", "who may post"]);
    t.add_row([
        "(community-wide)".to_string(),
        policy.write.as_str().to_string(),
    ]);
    for (sub, l) in &policy.channels {
        t.add_row([sub.clone(), l.as_str().to_string()]);
    }
    println!("{t}");
    let mut m = Table::new();
    m.load_preset(UTF8_BORDERS_ONLY).set_header(["key", "role"]);
    for member in answer["members"].as_array().into_iter().flatten() {
        m.add_row([
            member["key"].as_str().unwrap_or_default(),
            member["role"].as_str().unwrap_or_default(),
        ]);
    }
    println!("{m}");
    let invites = answer["invites"].as_array().cloned().unwrap_or_default();
    if !invites.is_empty() {
        let mut i = Table::new();
        i.load_preset(UTF8_BORDERS_ONLY)
            .set_header(["invite", "uses left", "expires", "role"]);
        for inv in invites {
            i.add_row([
                inv["id"].to_string(),
                inv["uses_left"].to_string(),
                inv["expires"].to_string(),
                inv["role"].to_string(),
            ]);
        }
        println!("{i}");
    }
}
