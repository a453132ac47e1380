//! Client commands: what a user of a relay runs, through the client library
//! (`meshrelay-client`) exactly as any other Rust client would.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, Context};
use clap::Args;
use futures_util::StreamExt;
use meshrelay_client::{Error as ClientError, Event, KeptReceipt, ReceiptStore, RelayClient};
use meshrelay_protocol::payload::Draft;
use meshrelay_protocol::{Filter, Payload};

pub(crate) const DEFAULT_RELAY: &str = "http://127.0.0.1:7700";

/// Filter options shared by `query` and `subscribe`.
#[derive(Debug, Args, Default)]
pub struct FilterArgs {
    /// Author key (repeatable).
    #[arg(long = "author")]
    pub authors: Vec<String>,
    /// Kind (repeatable).
    #[arg(long = "kind")]
    pub kinds: Vec<String>,
    /// Channel, or `prefix/*` (repeatable).
    #[arg(long = "channel")]
    pub channels: Vec<String>,
    /// Tag as NAME=VALUE (repeatable).
    #[arg(long = "tag")]
    pub tags: Vec<String>,
    #[arg(long)]
    pub since: Option<u64>,
    #[arg(long)]
    pub until: Option<u64>,
}

impl FilterArgs {
    fn to_filter(&self) -> anyhow::Result<Filter> {
        let list = |v: &Vec<String>| (!v.is_empty()).then(|| v.clone());
        let mut tags: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for t in &self.tags {
            let (name, value) = t
                .split_once('=')
                .ok_or_else(|| anyhow!("--tag takes NAME=VALUE, got {t:?}"))?;
            tags.entry(name.into()).or_default().push(value.into());
        }
        let f = Filter {
            authors: list(&self.authors),
            kinds: list(&self.kinds),
            channels: list(&self.channels),
            tags: (!tags.is_empty()).then_some(tags),
            since: self.since,
            until: self.until,
            ..Filter::default()
        };
        f.validate().map_err(|e| anyhow!("{}", e.message))?;
        Ok(f)
    }
}

#[derive(Debug, Args)]
pub struct PublishArgs {
    /// Relay base URL (repeatable); the payload goes to each.
    #[arg(long = "relay", env = "MESHRELAY_RELAY", value_delimiter = ',', default_value = DEFAULT_RELAY)]
    pub relays: Vec<String>,
    /// File holding the author's secret seed (as written by `keygen --out`).
    #[arg(long, env = "MESHRELAY_KEY_FILE")]
    pub key: PathBuf,
    #[arg(long)]
    pub channel: String,
    #[arg(long, default_value = "post")]
    pub kind: String,
    /// Tag as NAME=VALUE[,VALUE...] (repeatable).
    #[arg(long = "tag")]
    pub tags: Vec<String>,
    /// Upload FILE as a blob to every relay first and tag the payload
    /// `["b", <sha256>]` (repeatable); nothing is published if an upload fails.
    #[arg(long = "attach")]
    pub attach: Vec<PathBuf>,
    /// The receipts store (default: one file per author under the user's
    /// data directory, e.g. ~/.local/share/meshrelay/receipts/<key>.jsonl).
    #[arg(long, env = "MESHRELAY_RECEIPTS")]
    pub receipts: Option<PathBuf>,
    /// The content; `-` or nothing reads standard input.
    pub content: Option<String>,
}

#[derive(Debug, Args)]
pub struct SubscribeArgs {
    #[arg(long, env = "MESHRELAY_RELAY", default_value = DEFAULT_RELAY)]
    pub relay: String,
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Also print up to this many stored matches first.
    #[arg(long, default_value_t = 0)]
    pub stored: u64,
    /// Exit after printing this many payloads.
    #[arg(long)]
    pub count: Option<u64>,
}

#[derive(Debug, Args)]
pub struct QueryArgs {
    #[arg(long, env = "MESHRELAY_RELAY", default_value = DEFAULT_RELAY)]
    pub relay: String,
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Payload id (repeatable).
    #[arg(long = "id")]
    pub ids: Vec<String>,
    /// Results per page (the relay clamps it to its max_limit).
    #[arg(long, default_value_t = 100)]
    pub limit: u32,
    /// Follow `next_cursor` through every page.
    #[arg(long)]
    pub all: bool,
}

/// A client of the relay at `url`; `MESHRELAY_CA_FILE` names extra CA
/// certificates (PEM) to trust for `https://` and `wss://` relays beside the
/// built-in web roots, as `peer_ca_file` does for a node's peers.
pub(crate) fn relay(url: &str) -> anyhow::Result<RelayClient> {
    match std::env::var_os("MESHRELAY_CA_FILE") {
        None => Ok(RelayClient::new(url)?),
        Some(path) => {
            let pem = std::fs::read(&path).with_context(|| {
                format!(
                    "MESHRELAY_CA_FILE {}: cannot be read",
                    path.to_string_lossy()
                )
            })?;
            RelayClient::with_roots(url, Some(&pem))
                .with_context(|| format!("MESHRELAY_CA_FILE {}", path.to_string_lossy()))
        }
    }
}

/// `--receipts FILE`, or the author's default store.
pub fn receipts_store(path: Option<&Path>, author: &str) -> anyhow::Result<ReceiptStore> {
    Ok(match path {
        Some(p) => ReceiptStore::at(p),
        None => ReceiptStore::default_for(author)?,
    })
}

pub async fn publish(args: PublishArgs) -> anyhow::Result<ExitCode> {
    let content = read_content(args.content.as_deref())?;
    let mut tags = parse_tags(&args.tags)?;
    let author = Author::load(&args.key, args.receipts.as_deref())?;
    for file in &args.attach {
        let mut name = None;
        for relay in &args.relays {
            let stored = super::blob::upload(relay, &author.key, file).await?;
            name = Some(stored.sha256);
        }
        if let Some(sha256) = name {
            tags.push(vec!["b".to_string(), sha256]);
        }
    }
    let published = author
        .publish(&args.relays, args.kind, args.channel, tags, content, 0)
        .await?;
    Ok(published.exit_code())
}

/// An author publishing from the command line: the key and its receipts store.
pub struct Author {
    key: meshrelay_protocol::NodeKey,
    store: ReceiptStore,
}

/// What one publish to several relays came to.
pub struct Outcome {
    pub payload: Payload,
    /// Relays that refused it.
    pub refused: usize,
}

impl Outcome {
    /// 0 when every relay took it, 2 when one refused.
    pub fn exit_code(&self) -> ExitCode {
        if self.refused > 0 {
            ExitCode::from(2)
        } else {
            ExitCode::SUCCESS
        }
    }
}

impl Author {
    pub fn load(key: &Path, receipts: Option<&Path>) -> anyhow::Result<Self> {
        let key = crate::node_key::load(key)?;
        let store = receipts_store(receipts, &key.public_hex())?;
        Ok(Self { key, store })
    }

    pub fn public_hex(&self) -> String {
        self.key.public_hex()
    }

    /// Sign a payload chained to the author's tip and publish it to every
    /// relay, keeping the entry and each receipt; prints a line per relay.
    pub async fn publish(
        &self,
        relays: &[String],
        kind: String,
        channel: String,
        tags: Vec<Vec<String>>,
        content: String,
        not_before: u64,
    ) -> anyhow::Result<Outcome> {
        let author = self.key.public_hex();
        let relays = relays
            .iter()
            .map(|r| relay(r))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let tip = chain_tip(&relays, &self.store, &author).await?;
        let mut created_at = meshrelay_protocol::clock::now_wire_secs().max(not_before);
        if let Some(t) = &tip {
            // An author's log goes forward in time, also when its previous
            // entry was dated ahead (below).
            created_at = created_at.max(t.created_at);
            // Authority in a community is judged at whole seconds in
            // (created_at, id) order (PROTOCOL.md 9.3): an entry right after
            // the author's own join of that community must sort after it.
            if is_join_of(t, &channel) {
                created_at = created_at.max(t.created_at + 1);
            }
        }
        // Rather than date it ahead, wait the second or two until it is
        // `created_at`, so that what is published after it sorts after it.
        let ahead_ms = (created_at as i64 * 1000) - meshrelay_protocol::clock::now_ms();
        if (1..=5_000).contains(&ahead_ms) {
            tokio::time::sleep(std::time::Duration::from_millis(ahead_ms as u64)).await;
        }
        let payload = Payload::sign(
            &self.key,
            Draft {
                seq: tip.as_ref().map_or(1, |t| t.seq + 1),
                prev: tip.map(|t| t.id),
                created_at,
                kind,
                channel,
                tags,
                content,
            },
        );
        let mut refused = 0;
        let mut kept = false;
        for c in &relays {
            match c.publish(&payload).await {
                Ok(published) => {
                    if !kept {
                        // Before any receipt: the next publish chains to this entry.
                        self.store.add_published(payload.clone())?;
                        kept = true;
                    }
                    if let Some(receipt) = published.receipt {
                        self.store.add_receipt(KeptReceipt {
                            author: author.clone(),
                            seq: payload.seq,
                            relay: c.url().to_string(),
                            receipt,
                        })?;
                    }
                    let what = if published.duplicate {
                        "duplicate"
                    } else {
                        "stored"
                    };
                    println!("{}\t{what}\tseq {}\t{}", c.url(), payload.seq, payload.id);
                }
                Err(e) => {
                    refused += 1;
                    eprintln!("{}\trefused\t{e}", c.url());
                }
            }
        }
        Ok(Outcome { payload, refused })
    }
}

/// Whether `p` is a join of the community `channel` is in.
fn is_join_of(p: &Payload, channel: &str) -> bool {
    use meshrelay_protocol::community::place_of;
    let root = |c: &str| place_of(c).ok().flatten().map(|pl| pl.root.to_string());
    p.kind == "join" && root(&p.channel).is_some() && root(&p.channel) == root(channel)
}

/// The entry the next one chains to: the highest (ties: lowest id) of the
/// author's own last published entry and every relay's signed head whose
/// entry that relay serves, so publishing to B right after A does not fork
/// the log while B has not heard of A's newest entry. Every head verified is
/// kept in the receipts store.
async fn chain_tip(
    relays: &[RelayClient],
    store: &ReceiptStore,
    author: &str,
) -> anyhow::Result<Option<Payload>> {
    let mut tip = store.load(author)?.last_published().cloned();
    for c in relays {
        let head = match c.head(author).await {
            Ok(Some(h)) => h,
            Ok(None) => continue,
            Err(ClientError::BadAnswer(e)) => {
                eprintln!("warning: ignoring the head {} answered: {e}", c.url());
                continue;
            }
            Err(e) => return Err(anyhow!("asking {} for the author's head: {e}", c.url())),
        };
        store.add_head(c.url(), head.clone())?;
        // A relay signs what it likes: chain only to an entry the author signed.
        let entry = match c.get(&head.id).await {
            Ok(Some(p)) if p.author == author && p.seq == head.seq => p,
            _ => {
                eprintln!(
                    "warning: {} names seq {} ({}) as the head but does not serve that entry",
                    c.url(),
                    head.seq,
                    head.id
                );
                continue;
            }
        };
        if tip
            .as_ref()
            .is_none_or(|t| entry.seq > t.seq || (entry.seq == t.seq && entry.id < t.id))
        {
            tip = Some(entry);
        }
    }
    Ok(tip)
}

/// `--content`, or standard input for `-` or none.
fn read_content(arg: Option<&str>) -> anyhow::Result<String> {
    match arg {
        Some("-") | None => {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)?;
            Ok(s)
        }
        Some(c) => Ok(c.to_string()),
    }
}

/// `--tag NAME=V1,V2` as tags.
fn parse_tags(args: &[String]) -> anyhow::Result<Vec<Vec<String>>> {
    args.iter()
        .map(|t| {
            let (name, values) = t
                .split_once('=')
                .ok_or_else(|| anyhow!("--tag takes NAME=VALUE, got {t:?}"))?;
            let mut tag = vec![name.to_string()];
            tag.extend(values.split(',').map(String::from));
            Ok(tag)
        })
        .collect()
}

pub async fn query(args: QueryArgs) -> anyhow::Result<ExitCode> {
    let mut f = args.filter.to_filter()?;
    if !args.ids.is_empty() {
        f.ids = Some(args.ids.clone());
    }
    f.limit = Some(args.limit.into());
    f.validate().map_err(|e| anyhow!("{}", e.message))?;
    let c = relay(&args.relay)?;
    let mut cursor: Option<String> = None;
    loop {
        let page = c.query(&f, cursor.as_deref()).await?;
        for p in &page.payloads {
            println!("{}", p.to_json());
        }
        cursor = page.next_cursor;
        if !args.all || cursor.is_none() {
            break;
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn subscribe(args: SubscribeArgs) -> anyhow::Result<ExitCode> {
    let mut filter = args.filter.to_filter()?;
    filter.limit = Some(args.stored);
    if args.count == Some(0) {
        return Ok(ExitCode::SUCCESS);
    }
    let c = relay(&args.relay)?;
    let mut events = c.subscribe(vec![filter]).await?;
    let mut printed = 0u64;
    while let Some(event) = events.next().await {
        match event? {
            Event::Payload(p) => {
                println!("{}", p.to_json());
                printed += 1;
                if args.count.is_some_and(|c| printed >= c) {
                    break;
                }
            }
            Event::EndOfStored => eprintln!("-- end of stored payloads; waiting for live ones"),
        }
    }
    Ok(ExitCode::SUCCESS)
}
