//! `meshrelay admin ...`: the admin API (PROTOCOL.md 7) from the command line,
//! as tables for people or `--json` for scripts.
//!
//! The address and token come from the node's own settings (the same config
//! file and `MESHRELAY_*` variables as `serve`): `admin_listen`, and
//! `admin_token` or the generated `data_dir/admin.token`. `--url` and
//! `--token` override them.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use comfy_table::{presets::UTF8_FULL_CONDENSED, ContentArrangement, Table};
use serde_json::{json, Value};

use crate::settings::Settings;

#[derive(Debug, Args)]
pub struct AdminArgs {
    /// The node's settings, to find its admin address and token.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// The admin listener, e.g. http://127.0.0.1:7701 (default: from `admin_listen`).
    // Its own id: `peers add <url>` has a positional of that name.
    #[arg(long = "url", id = "admin_url", value_name = "URL", global = true)]
    admin_url: Option<String>,
    /// The admin token (default: `admin_token`, which `MESHRELAY_ADMIN_TOKEN`
    /// sets too, else `data_dir/admin.token`).
    #[arg(long, global = true)]
    token: Option<String>,
    /// Print the API's JSON answer instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Counts, rates, connections, outbox depth, database size.
    Stats,
    /// List, add and steer peers.
    Peers {
        #[command(subcommand)]
        command: Option<PeersCommand>,
    },
    /// Blocked authors: list, block, unblock.
    Authors {
        #[command(subcommand)]
        command: Option<AuthorsCommand>,
    },
    /// Hide one payload for good.
    Hide {
        /// The payload id.
        id: String,
    },
    /// The outbox: list pending or dead deliveries, retry dead letters.
    Deliveries {
        #[command(subcommand)]
        command: Option<DeliveriesCommand>,
        /// `pending` or `dead`.
        #[arg(long, default_value = "pending")]
        state: String,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Scheduled jobs: list them, or run one now.
    Jobs {
        #[command(subcommand)]
        command: Option<JobsCommand>,
    },
    /// Who changed what, newest first.
    Audit {
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
}

#[derive(Debug, Subcommand)]
enum PeersCommand {
    /// Every known peer (the default).
    List,
    /// Add a peer by URL (fetch its document, pin its key, announce).
    Add { url: String },
    /// Approve a pending peer, or re-pin one whose key changed.
    Approve { node: String },
    /// Refuse the peer's requests and stop delivering to it.
    Block { node: String },
    /// Let a blocked peer back in (active again).
    Unblock { node: String },
    /// Fetch its node document now.
    Poll { node: String },
    /// Forget a peer and its queue.
    Remove { node: String },
}

#[derive(Debug, Subcommand)]
enum AuthorsCommand {
    /// Blocked authors (the default).
    Blocked,
    /// Refuse an author's payloads and hide its stored ones.
    Block { key: String },
    /// Accept the author's payloads again and show its stored ones.
    Unblock { key: String },
}

#[derive(Debug, Subcommand)]
enum DeliveriesCommand {
    /// Put dead letters back in the queue: the ids given, or all.
    Retry { ids: Vec<i64> },
}

#[derive(Debug, Subcommand)]
enum JobsCommand {
    /// Every job (the default).
    List,
    /// Run a job now.
    Run { name: String },
}

struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("reaching the admin API at {}", self.base))?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        let value: Value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        if !status.is_success() {
            let code = value["error"]["code"].as_str().unwrap_or("error");
            let message = value["error"]["message"].as_str().unwrap_or("");
            anyhow::bail!("{} {code}: {message}", status.as_u16());
        }
        Ok(value)
    }
}

fn client(args: &AdminArgs) -> anyhow::Result<Client> {
    let settings = Settings::load(args.config.as_deref())?;
    let base = match &args.admin_url {
        Some(u) => u.trim_end_matches('/').to_string(),
        None => {
            let addr = settings.admin_listen.replace("0.0.0.0:", "127.0.0.1:");
            let addr = addr.replace("[::]:", "[::1]:");
            format!("http://{addr}")
        }
    };
    let token = match (&args.token, &settings.admin_token) {
        (Some(t), _) | (None, Some(t)) => t.clone(),
        (None, None) => {
            let path = settings.data_dir.join("admin.token");
            std::fs::read_to_string(&path)
                .with_context(|| {
                    format!(
                        "reading the admin token from {} (or give --token, or --config for the node's settings)",
                        path.display()
                    )
                })?
                .trim()
                .to_string()
        }
    };
    Ok(Client {
        http: reqwest::Client::new(),
        base,
        token,
    })
}

pub async fn run(args: AdminArgs) -> anyhow::Result<ExitCode> {
    let c = client(&args)?;
    match run_command(&c, &args).await {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) => {
            eprintln!("meshrelay admin: {e:#}");
            Ok(ExitCode::FAILURE)
        }
    }
}

async fn run_command(c: &Client, args: &AdminArgs) -> anyhow::Result<()> {
    use reqwest::Method;
    let (get, post, delete) = (Method::GET, Method::POST, Method::DELETE);
    let value = match &args.command {
        AdminCommand::Stats => c.call(get, "/admin/v1/stats", None).await?,
        AdminCommand::Peers { command } => match command.as_ref().unwrap_or(&PeersCommand::List) {
            PeersCommand::List => c.call(get, "/admin/v1/peers", None).await?,
            PeersCommand::Add { url } => {
                c.call(post, "/admin/v1/peers", Some(json!({"url": url})))
                    .await?
            }
            PeersCommand::Approve { node } => peer(c, node, "approve").await?,
            PeersCommand::Block { node } => peer(c, node, "block").await?,
            PeersCommand::Unblock { node } => peer(c, node, "unblock").await?,
            PeersCommand::Poll { node } => peer(c, node, "poll").await?,
            PeersCommand::Remove { node } => {
                c.call(delete, &format!("/admin/v1/peers/{node}"), None)
                    .await?;
                json!({"removed": node})
            }
        },
        AdminCommand::Authors { command } => {
            match command.as_ref().unwrap_or(&AuthorsCommand::Blocked) {
                AuthorsCommand::Blocked => c.call(get, "/admin/v1/authors/blocked", None).await?,
                AuthorsCommand::Block { key } => {
                    c.call(post, &format!("/admin/v1/authors/{key}/block"), None)
                        .await?
                }
                AuthorsCommand::Unblock { key } => {
                    c.call(delete, &format!("/admin/v1/authors/{key}/block"), None)
                        .await?
                }
            }
        }
        AdminCommand::Hide { id } => {
            c.call(delete, &format!("/admin/v1/payloads/{id}"), None)
                .await?
        }
        AdminCommand::Deliveries {
            command,
            state,
            limit,
        } => match command {
            None => {
                c.call(
                    get,
                    &format!("/admin/v1/deliveries?state={state}&limit={limit}"),
                    None,
                )
                .await?
            }
            Some(DeliveriesCommand::Retry { ids }) => {
                let body = (!ids.is_empty()).then(|| json!({"ids": ids}));
                c.call(post, "/admin/v1/deliveries/retry", body).await?
            }
        },
        AdminCommand::Jobs { command } => match command.as_ref().unwrap_or(&JobsCommand::List) {
            JobsCommand::List => c.call(get, "/admin/v1/jobs", None).await?,
            JobsCommand::Run { name } => {
                c.call(post, &format!("/admin/v1/jobs/{name}/run"), None)
                    .await?
            }
        },
        AdminCommand::Audit { limit } => {
            c.call(get, &format!("/admin/v1/audit?limit={limit}"), None)
                .await?
        }
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        print_human(&args.command, &value);
    }
    Ok(())
}

async fn peer(c: &Client, node: &str, action: &str) -> anyhow::Result<Value> {
    c.call(
        reqwest::Method::POST,
        &format!("/admin/v1/peers/{node}/{action}"),
        None,
    )
    .await
}

fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(header.iter().copied());
    t
}

/// A JSON value as a cell: strings bare, null as a dash.
fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".to_string(),
        Value::String(s) => s.clone(),
        v => v.to_string(),
    }
}

/// Unix seconds as UTC time.
fn time(v: &Value) -> String {
    v.as_i64()
        .and_then(|t| chrono::DateTime::from_timestamp(t, 0))
        .map_or("-".to_string(), |d| {
            d.format("%Y-%m-%d %H:%M:%S").to_string()
        })
}

fn print_rows(header: &[&str], rows: impl Iterator<Item = Vec<String>>) {
    let mut t = table(header);
    let mut n = 0;
    for r in rows {
        t.add_row(r);
        n += 1;
    }
    if n == 0 {
        println!("(none)");
    } else {
        println!("{t}");
    }
}

fn peer_row(p: &Value) -> Vec<String> {
    let h = &p["health"];
    vec![
        cell(&p["node"]),
        cell(&p["url"]),
        cell(&p["status"]),
        time(&p["last_poll"]),
        format!(
            "{} ({} pending, {} dead)",
            cell(&h["state"]),
            cell(&h["pending"]),
            cell(&h["dead"])
        ),
    ]
}

const PEER_HEADER: [&str; 5] = ["node", "url", "status", "last poll (UTC)", "health"];

fn print_human(cmd: &AdminCommand, v: &Value) {
    let list = |key: &str| v[key].as_array().cloned().unwrap_or_default();
    match cmd {
        AdminCommand::Stats => {
            let mut t = table(&["stat", "value"]);
            let p = &v["payloads"];
            let r = &v["rates"];
            let rate = |x: &Value| x.as_f64().map_or("-".to_string(), |x| format!("{x:.1}/s"));
            for (k, val) in [
                ("node", cell(&v["node"])),
                ("version", cell(&v["version"])),
                ("uptime", format!("{} s", cell(&v["uptime_secs"]))),
                (
                    "database",
                    format!(
                        "{}, {} bytes",
                        cell(&v["database"]["backend"]),
                        cell(&v["database"]["size_bytes"])
                    ),
                ),
                ("payloads stored", cell(&p["stored"])),
                ("payloads hidden", cell(&p["hidden"])),
                ("received, last hour", cell(&p["received_last_hour"])),
                ("received, last day", cell(&p["received_last_day"])),
                ("ingest", rate(&r["ingest_per_sec"])),
                ("forwarding", rate(&r["forward_per_sec"])),
                ("connections", cell(&v["connections"])),
                ("subscriptions", cell(&v["subscriptions"])),
                ("outbox pending", cell(&v["outbox"]["pending"])),
                ("dead letters", cell(&v["dead_letters"])),
            ] {
                t.add_row(vec![k.to_string(), val]);
            }
            println!("{t}");
            let peers = v["outbox"]["peers"].as_array().cloned().unwrap_or_default();
            if !peers.is_empty() {
                print_rows(
                    &["peer", "pending", "dead"],
                    peers
                        .iter()
                        .map(|p| vec![cell(&p["node"]), cell(&p["pending"]), cell(&p["dead"])]),
                );
            }
        }
        AdminCommand::Peers { command } => match command {
            None | Some(PeersCommand::List) => {
                print_rows(&PEER_HEADER, list("peers").iter().map(peer_row))
            }
            Some(PeersCommand::Remove { node }) => println!("removed {node}"),
            Some(_) => print_rows(&PEER_HEADER, std::iter::once(peer_row(v))),
        },
        AdminCommand::Authors { command } => match command {
            None | Some(AuthorsCommand::Blocked) => print_rows(
                &["author", "blocked at (UTC)"],
                list("authors")
                    .iter()
                    .map(|a| vec![cell(&a["author"]), time(&a["blocked_at"])]),
            ),
            Some(_) => println!(
                "{}: {}",
                cell(&v["author"]),
                if v["blocked"] == true {
                    "blocked"
                } else {
                    "unblocked"
                }
            ),
        },
        AdminCommand::Hide { .. } => println!(
            "{}: hidden{}",
            cell(&v["id"]),
            if v["changed"] == false {
                " (already)"
            } else {
                ""
            }
        ),
        AdminCommand::Deliveries { command, .. } => match command {
            None => print_rows(
                &["id", "peer", "payload", "attempts", "last error"],
                list("deliveries").iter().map(|d| {
                    vec![
                        cell(&d["id"]),
                        cell(&d["peer"]),
                        cell(&d["payload"]),
                        cell(&d["attempts"]),
                        cell(&d["last_error"]),
                    ]
                }),
            ),
            Some(_) => println!("{} put back in the queue", cell(&v["retried"])),
        },
        AdminCommand::Jobs { command } => match command {
            None | Some(JobsCommand::List) => print_rows(
                &[
                    "job",
                    "schedule",
                    "last run (UTC)",
                    "outcome",
                    "message",
                    "next run (UTC)",
                ],
                list("jobs").iter().map(|j| {
                    vec![
                        cell(&j["name"]),
                        cell(&j["schedule"]),
                        time(&j["last_run"]),
                        cell(&j["last_outcome"]),
                        cell(&j["last_message"]),
                        time(&j["next_run"]),
                    ]
                }),
            ),
            Some(JobsCommand::Run { name }) => println!("{name}: started"),
        },
        AdminCommand::Audit { .. } => print_rows(
            &["at (UTC)", "action", "target", "from", "detail"],
            list("entries").iter().map(|e| {
                vec![
                    time(&e["at"]),
                    cell(&e["action"]),
                    cell(&e["target"]),
                    format!("{} ({})", cell(&e["from"]), cell(&e["via"])),
                    cell(&e["detail"]),
                ]
            }),
        ),
    }
}
