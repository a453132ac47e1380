//! `meshrelay admin ...`: the admin API (PROTOCOL.md 7) from the command line,
//! as tables for people or `--json` for scripts.
//!
//! The address and token come from the node's own settings (the same config
//! file and `MESHRELAY_*` variables as `serve`): `admin_listen`, and
//! `admin_token` or the generated `data_dir/admin.token`. `--url` and
//! `--token` override them.
//!
//! Answers are read into the admin API's own types (`meshrelay_admin_api::types`),
//! so a change on either side shows up as a compile error or a clear "unexpected
//! answer", not a table of dashes. `--json` prints the answer as it came.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use meshrelay_admin_api::types::{
    AddPeer, AuditLog, AuthorBlock, BlockedAuthors, Deliveries, ErrorBody, HiddenPayload, JobList,
    JobStarted, PeerList, PeerView, Retried, RetryRequest, Stats,
};
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};

use crate::settings::Settings;

mod print;

/// How a command finds the running node's admin API.
#[derive(Debug, Args)]
pub struct NodeConnection {
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
}

#[derive(Debug, Args)]
pub struct AdminArgs {
    #[command(flatten)]
    node: NodeConnection,
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

pub(crate) struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
    /// Where `base` came from, for an error that says how to point elsewhere.
    found: String,
}

impl Client {
    /// The answer's body, once the status says it succeeded.
    async fn call(&self, method: Method, path: &str) -> anyhow::Result<String> {
        self.send(self.request(method, path)).await
    }

    /// The same, with a JSON request body.
    async fn call_with(
        &self,
        method: Method,
        path: &str,
        body: &impl Serialize,
    ) -> anyhow::Result<String> {
        self.send(self.request(method, path).json(body)).await
    }

    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
    }

    /// POST a JSON body and return the answer unread (a stream), once its
    /// status says it succeeded.
    pub(crate) async fn stream(
        &self,
        path: &str,
        body: &impl Serialize,
    ) -> anyhow::Result<reqwest::Response> {
        let resp = self
            .reach(self.request(Method::POST, path).json(body))
            .await?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        Err(error_answer(status, &text))
    }

    async fn reach(&self, req: reqwest::RequestBuilder) -> anyhow::Result<reqwest::Response> {
        req.send().await.with_context(|| {
            format!(
                "reaching the admin API at {} ({}); is the node running there? \
                 Point at it with --config <the node's config file>, \
                 MESHRELAY_ADMIN_LISTEN, or --url",
                self.base, self.found
            )
        })
    }

    /// Send, and turn an error answer (`{"error": {"code", "message"}}`) into
    /// `<status> <code>: <message>`.
    async fn send(&self, req: reqwest::RequestBuilder) -> anyhow::Result<String> {
        let resp = self.reach(req).await?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        if !status.is_success() {
            return Err(error_answer(status, &text));
        }
        Ok(text)
    }
}

/// `<status> <code>: <message>` of an error answer (`{"error": {"code", "message"}}`).
fn error_answer(status: reqwest::StatusCode, text: &str) -> anyhow::Error {
    let (code, message) = match serde_json::from_str::<ErrorBody>(text) {
        Ok(ErrorBody { error }) => (error.code, error.message),
        Err(_) => ("error".to_string(), String::new()),
    };
    anyhow::anyhow!("{} {code}: {message}", status.as_u16())
}

/// Which settings `meshrelay admin` read, in words: the config file (or
/// none) and the `MESHRELAY_*` variables that were set.
fn settings_read(args: &NodeConnection) -> String {
    let file = match &args.config {
        Some(f) => format!("config file {}", f.display()),
        None => "no config file".to_string(),
    };
    let mut vars: Vec<String> = std::env::vars()
        .map(|(k, _)| k)
        .filter(|k| k.starts_with("MESHRELAY_"))
        .collect();
    vars.sort();
    match vars.is_empty() {
        true => format!("{file}, no MESHRELAY_* variables"),
        false => format!("{file}, variables {}", vars.join(" ")),
    }
}

pub(crate) fn client(args: &NodeConnection) -> anyhow::Result<Client> {
    let settings = Settings::load(args.config.as_deref())?;
    let read = settings_read(args);
    let (base, found) = match &args.admin_url {
        Some(u) => (
            u.trim_end_matches('/').to_string(),
            "from --url".to_string(),
        ),
        None => {
            let addr = settings.admin_listen.replace("0.0.0.0:", "127.0.0.1:");
            let addr = addr.replace("[::]:", "[::1]:");
            let found = format!("admin_listen = {} from {read}", settings.admin_listen);
            (format!("http://{addr}"), found)
        }
    };
    let token = match (&args.token, &settings.admin_token) {
        (Some(t), _) | (None, Some(t)) => t.clone(),
        (None, None) => {
            let path = settings.data_dir.join("admin.token");
            let shown = std::path::absolute(&path).unwrap_or_else(|_| path.clone());
            std::fs::read_to_string(&path)
                .with_context(|| {
                    format!(
                        "reading the admin token from {} (data_dir = {} from {read}); \
                         give --token, or --config with the node's config file, or run \
                         where the node's data_dir is",
                        shown.display(),
                        settings.data_dir.display()
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
        found,
    })
}

pub async fn run(args: AdminArgs) -> anyhow::Result<ExitCode> {
    let c = client(&args.node)?;
    match run_command(&c, &args).await {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) => {
            eprintln!("meshrelay admin: {e:#}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// How to show an answer: as it came with `--json`, else read into `T` and
/// printed for people.
struct Show {
    json: bool,
}

impl Show {
    fn answer<T: DeserializeOwned>(&self, text: &str, human: impl FnOnce(T)) -> anyhow::Result<()> {
        if self.json {
            let value: Value = if text.is_empty() {
                Value::Null
            } else {
                serde_json::from_str(text).unwrap_or(Value::String(text.to_string()))
            };
            self.value(&value)
        } else {
            let answer = serde_json::from_str(text).with_context(|| {
                format!("the admin API answered something this meshrelay does not read: {text}")
            })?;
            human(answer);
            Ok(())
        }
    }

    fn value(&self, value: &Value) -> anyhow::Result<()> {
        println!("{}", serde_json::to_string_pretty(value)?);
        Ok(())
    }
}

async fn run_command(c: &Client, args: &AdminArgs) -> anyhow::Result<()> {
    let show = Show { json: args.json };
    match &args.command {
        AdminCommand::Stats => show.answer(
            &c.call(Method::GET, "/admin/v1/stats").await?,
            |s: Stats| print::stats(&s),
        ),
        AdminCommand::Peers { command } => {
            peers(c, &show, command.as_ref().unwrap_or(&PeersCommand::List)).await
        }
        AdminCommand::Authors { command } => {
            authors(
                c,
                &show,
                command.as_ref().unwrap_or(&AuthorsCommand::Blocked),
            )
            .await
        }
        AdminCommand::Hide { id } => show.answer(
            &c.call(Method::DELETE, &format!("/admin/v1/payloads/{id}"))
                .await?,
            |h: HiddenPayload| print::hidden(&h),
        ),
        AdminCommand::Deliveries {
            command,
            state,
            limit,
        } => deliveries(c, &show, command.as_ref(), state, *limit).await,
        AdminCommand::Jobs { command } => {
            jobs(c, &show, command.as_ref().unwrap_or(&JobsCommand::List)).await
        }
        AdminCommand::Audit { limit } => show.answer(
            &c.call(Method::GET, &format!("/admin/v1/audit?limit={limit}"))
                .await?,
            |a: AuditLog| print::audit(&a.entries),
        ),
    }
}

async fn peers(c: &Client, show: &Show, command: &PeersCommand) -> anyhow::Result<()> {
    let action = |node: &str, action: &str| format!("/admin/v1/peers/{node}/{action}");
    let text = match command {
        PeersCommand::List => {
            let text = c.call(Method::GET, "/admin/v1/peers").await?;
            return show.answer(&text, |l: PeerList| print::peers(&l.peers));
        }
        PeersCommand::Add { url } => {
            let body = AddPeer { url: url.clone() };
            c.call_with(Method::POST, "/admin/v1/peers", &body).await?
        }
        PeersCommand::Approve { node } => c.call(Method::POST, &action(node, "approve")).await?,
        PeersCommand::Block { node } => c.call(Method::POST, &action(node, "block")).await?,
        PeersCommand::Unblock { node } => c.call(Method::POST, &action(node, "unblock")).await?,
        PeersCommand::Poll { node } => c.call(Method::POST, &action(node, "poll")).await?,
        PeersCommand::Remove { node } => {
            // 204, no body: what is shown is what was asked.
            c.call(Method::DELETE, &format!("/admin/v1/peers/{node}"))
                .await?;
            return if show.json {
                show.value(&json!({"removed": node}))
            } else {
                println!("removed {node}");
                Ok(())
            };
        }
    };
    show.answer(&text, |p: PeerView| print::peers(std::slice::from_ref(&p)))
}

async fn authors(c: &Client, show: &Show, command: &AuthorsCommand) -> anyhow::Result<()> {
    let block = |key: &str| format!("/admin/v1/authors/{key}/block");
    let text = match command {
        AuthorsCommand::Blocked => {
            let text = c.call(Method::GET, "/admin/v1/authors/blocked").await?;
            return show.answer(&text, |b: BlockedAuthors| {
                print::blocked_authors(&b.authors)
            });
        }
        AuthorsCommand::Block { key } => c.call(Method::POST, &block(key)).await?,
        AuthorsCommand::Unblock { key } => c.call(Method::DELETE, &block(key)).await?,
    };
    show.answer(&text, |b: AuthorBlock| print::author_block(&b))
}

async fn deliveries(
    c: &Client,
    show: &Show,
    command: Option<&DeliveriesCommand>,
    state: &str,
    limit: u32,
) -> anyhow::Result<()> {
    let path = "/admin/v1/deliveries/retry";
    match command {
        None => show.answer(
            &c.call(
                Method::GET,
                &format!("/admin/v1/deliveries?state={state}&limit={limit}"),
            )
            .await?,
            |d: Deliveries| print::deliveries(&d.deliveries),
        ),
        // No ids: no body, which retries every dead letter.
        Some(DeliveriesCommand::Retry { ids }) if ids.is_empty() => show
            .answer(&c.call(Method::POST, path).await?, |r: Retried| {
                print::retried(&r)
            }),
        Some(DeliveriesCommand::Retry { ids }) => {
            let body = RetryRequest {
                ids: Some(ids.clone()),
            };
            show.answer(
                &c.call_with(Method::POST, path, &body).await?,
                |r: Retried| print::retried(&r),
            )
        }
    }
}

async fn jobs(c: &Client, show: &Show, command: &JobsCommand) -> anyhow::Result<()> {
    match command {
        JobsCommand::List => show.answer(
            &c.call(Method::GET, "/admin/v1/jobs").await?,
            |l: JobList| print::jobs(&l.jobs),
        ),
        JobsCommand::Run { name } => show.answer(
            &c.call(Method::POST, &format!("/admin/v1/jobs/{name}/run"))
                .await?,
            |s: JobStarted| print::job_started(&s),
        ),
    }
}
