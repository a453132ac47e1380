//! `meshrelay audit`: fetch an author's whole log and signed head from every
//! relay, check them against each other and against the receipts store
//! (PROTOCOL.md 2.2, 4.4), print the findings with their evidence, and with
//! `--repair` give each relay the valid entries another serves.
//!
//! Exit 0 without findings, 1 with, 2 when the audit could not run.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use comfy_table::{presets::UTF8_BORDERS_ONLY, Table};
use meshrelay_client::audit::{missing_entries, Finding, HeadSeen, Kind, RelayLog};
use meshrelay_client::{Error as ClientError, KeptReceipt, LogEntry, RelayClient};
use std::collections::{BTreeSet, HashSet};

use meshrelay_protocol::community::{place_of, Evaluation};
use meshrelay_protocol::{Payload, PublicKey};
use serde_json::{json, Value};

use super::client::receipts_store;

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// The author whose log is audited.
    #[arg(long)]
    pub author: String,
    /// A relay base URL (repeatable; at least one).
    #[arg(long = "relay", required = true, value_delimiter = ',')]
    pub relays: Vec<String>,
    /// The receipts store (default: the author's under the user's data directory).
    #[arg(long, env = "MESHRELAY_RECEIPTS")]
    pub receipts: Option<PathBuf>,
    /// Print `{"author", "relays", "findings"}` as JSON.
    #[arg(long)]
    pub json: bool,
    /// Republish to each relay the validly signed entries it lacks that
    /// another relay serves.
    #[arg(long)]
    pub repair: bool,
}

pub async fn audit(args: AuditArgs) -> anyhow::Result<ExitCode> {
    match run(&args).await {
        Ok(code) => Ok(code),
        Err(e) => {
            eprintln!("meshrelay audit: could not run: {e:#}");
            Ok(ExitCode::from(2))
        }
    }
}

async fn run(args: &AuditArgs) -> anyhow::Result<ExitCode> {
    PublicKey::from_hex(&args.author).map_err(|e| anyhow::anyhow!("--author: {e}"))?;
    let store = receipts_store(args.receipts.as_deref(), &args.author)?;
    let earlier = store.load(&args.author)?;
    let mut clients = Vec::new();
    let mut logs = Vec::new();
    for url in &args.relays {
        let c = super::client::relay(url)?;
        logs.push(fetch(&c, &args.author).await?);
        clients.push(c);
    }
    let governed = governed(&clients, &logs, &earlier).await?;
    let findings = meshrelay_client::audit(&logs, &earlier, &governed);
    // Only now: this run's heads are compared with earlier ones, not themselves.
    for log in &logs {
        if let HeadSeen::Signed(h) = &log.head {
            store.add_head(&log.url, h.clone())?;
        }
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report(&args.author, &logs, &findings))?
        );
    } else {
        print_tables(&args.author, &logs, &findings);
    }
    if args.repair {
        repair(&clients, &logs, &governed, &store, &args.author, args.json).await?;
    }
    Ok(if findings.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The author's entries a community's visible governance hides (PROTOCOL.md
/// 9.4), computed here from every governance payload any of the relays
/// serves on the roots of the author's community entries (those served and
/// those the receipts store kept): a relay that holds them back is honest.
async fn governed(
    clients: &[RelayClient],
    logs: &[RelayLog],
    earlier: &meshrelay_client::Evidence,
) -> anyhow::Result<HashSet<String>> {
    let mut known: Vec<&Payload> = earlier.published.iter().collect();
    for l in logs {
        known.extend(l.entries.iter().filter_map(|e| match e {
            LogEntry::Valid(p) => Some(p),
            LogEntry::Invalid { .. } => None,
        }));
    }
    let root = |p: &Payload| {
        place_of(&p.channel)
            .ok()
            .flatten()
            .map(|pl| pl.root.to_string())
    };
    let roots: BTreeSet<String> = known.iter().filter_map(|p| root(p)).collect();
    let mut governed = HashSet::new();
    for r in roots {
        let mut governance = Vec::new();
        for c in clients {
            governance.extend(c.community_governance(&r).await?);
        }
        let evaluation = Evaluation::new(&r, &governance);
        for p in known
            .iter()
            .filter(|p| root(p).as_deref() == Some(r.as_str()))
        {
            if !evaluation.shown(*p) {
                governed.insert(p.id.clone());
            }
        }
    }
    Ok(governed)
}

/// The relay's node key, whole log and head; a head that does not verify is
/// a finding, anything unreachable stops the audit.
async fn fetch(c: &RelayClient, author: &str) -> anyhow::Result<RelayLog> {
    let node = c.node_key().await?;
    let entries = c.log(author).await?;
    let head = match c.head(author).await {
        Ok(Some(h)) => HeadSeen::Signed(h),
        Ok(None) => HeadSeen::None,
        Err(ClientError::BadAnswer(why)) => HeadSeen::Invalid(why),
        Err(e) => return Err(e.into()),
    };
    Ok(RelayLog {
        url: c.url().to_string(),
        node,
        entries,
        head,
    })
}

fn report(author: &str, logs: &[RelayLog], findings: &[Finding]) -> Value {
    let relays: Vec<Value> = logs
        .iter()
        .map(|l| {
            let head = match &l.head {
                HeadSeen::Signed(h) => json!(h),
                _ => Value::Null,
            };
            json!({"url": l.url, "node": l.node, "entries": l.entries.len(), "head": head})
        })
        .collect();
    json!({"author": author, "relays": relays, "findings": findings})
}

fn print_tables(author: &str, logs: &[RelayLog], findings: &[Finding]) {
    println!("audit of {author}");
    for l in logs {
        let head = match &l.head {
            HeadSeen::Signed(h) => format!("head seq {}", h.seq),
            HeadSeen::None => "no head".into(),
            HeadSeen::Invalid(_) => "head does not verify".into(),
        };
        let valid = l
            .entries
            .iter()
            .filter(|e| matches!(e, LogEntry::Valid(_)))
            .count();
        println!(
            "\n{} (node {}): {valid} valid entries, {head}",
            l.url,
            short(&l.node)
        );
        let mine: Vec<&Finding> = findings.iter().filter(|f| f.relay == l.url).collect();
        if mine.is_empty() {
            println!("  no findings");
            continue;
        }
        let mut t = Table::new();
        t.load_preset(UTF8_BORDERS_ONLY)
            .set_header(["finding", "seq", "id", "evidence"]);
        for f in mine {
            let seq = f.seq.map_or("?".into(), |s| s.to_string());
            let id = f.id.as_deref().map_or("?".into(), short);
            t.add_row([f.kind.as_str().to_string(), seq, id, summary(f)]);
        }
        println!("{t}");
    }
    println!(
        "\n{} finding{}",
        findings.len(),
        if findings.len() == 1 { "" } else { "s" }
    );
}

/// The evidence of a finding in a few words.
fn summary(f: &Finding) -> String {
    let e = &f.evidence;
    match f.kind {
        Kind::Invalid => e["reason"].as_str().unwrap_or_default().to_string(),
        Kind::Rollback => format!(
            "signed seq {} at {} before, seq {} at {} now",
            e["earlier"]["seq"], e["earlier"]["at"], e["now"]["seq"], e["now"]["at"]
        ),
        Kind::Withheld if e.get("receipt").is_some() => {
            format!(
                "receipt of {} no longer served",
                e["receipt"]["received_at"]
            )
        }
        Kind::Withheld => format!("signed head at {} no longer served", e["head"]["at"]),
        Kind::Omission if e.get("named_by").is_some() => {
            format!(
                "prev of {} is not served",
                short(e["named_by"].as_str().unwrap_or("?"))
            )
        }
        Kind::Omission => format!("served by {}", join(&e["served_by"])),
        Kind::Fork => format!(
            "ids {}",
            f.ids
                .iter()
                .flatten()
                .map(|i| short(i))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn join(v: &Value) -> String {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

fn short(hex: &str) -> String {
    hex.chars().take(12).collect()
}

/// Publish to each relay what it lacks; its receipts go to the store.
async fn repair(
    clients: &[RelayClient],
    logs: &[RelayLog],
    governed: &HashSet<String>,
    store: &meshrelay_client::ReceiptStore,
    author: &str,
    quiet: bool,
) -> anyhow::Result<()> {
    for (c, missing) in clients.iter().zip(missing_entries(logs, governed)) {
        let (mut sent, mut refused) = (0, 0);
        for p in &missing {
            match c.publish(p).await {
                Ok(published) => {
                    sent += 1;
                    if let Some(receipt) = published.receipt {
                        store.add_receipt(KeptReceipt {
                            author: author.to_string(),
                            seq: p.seq,
                            relay: c.url().to_string(),
                            receipt,
                        })?;
                    }
                }
                Err(e) => {
                    refused += 1;
                    eprintln!("{}: seq {} ({}) refused: {e}", c.url(), p.seq, p.id);
                }
            }
        }
        if !quiet || refused > 0 {
            eprintln!(
                "repair: {} took {sent} of {} missing entries",
                c.url(),
                missing.len()
            );
        }
    }
    Ok(())
}
