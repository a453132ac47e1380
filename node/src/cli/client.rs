//! Client commands: what a user of a relay runs, talking HTTP and WebSocket
//! to one or more relays exactly as any other client would.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use clap::Args;
use futures_util::{SinkExt, StreamExt};
use meshrelay_protocol::payload::Draft;
use meshrelay_protocol::{Filter, Payload};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

const DEFAULT_RELAY: &str = "http://127.0.0.1:7700";

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
    /// Results per page.
    #[arg(long, default_value_t = 100)]
    pub limit: u32,
    /// Follow `next_cursor` through every page.
    #[arg(long)]
    pub all: bool,
}

fn http() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .connect_timeout(Duration::from_secs(10))
        .user_agent(concat!("meshrelay-cli/", env!("CARGO_PKG_VERSION")))
        .build()?)
}

fn base(url: &str) -> &str {
    url.trim_end_matches('/')
}

/// Turn an error answer into one readable line.
async fn describe_error(resp: reqwest::Response) -> String {
    let status = resp.status();
    match resp.json::<Value>().await {
        Ok(v) => format!(
            "{} {}: {}",
            status.as_u16(),
            v["error"]["code"].as_str().unwrap_or("?"),
            v["error"]["message"].as_str().unwrap_or("")
        ),
        Err(_) => format!("HTTP {status}"),
    }
}

pub async fn publish(args: PublishArgs) -> anyhow::Result<ExitCode> {
    let key = crate::node_key::load(&args.key)?;
    let content = read_content(args.content.as_deref())?;
    let tags = parse_tags(&args.tags)?;
    let client = http()?;
    let head = highest_head(&client, &args.relays, &key.public_hex()).await?;
    let now = meshrelay_protocol::clock::now_wire_secs();
    let payload = Payload::sign(
        &key,
        Draft {
            seq: head.as_ref().map_or(1, |(s, _)| s + 1),
            prev: head.map(|(_, id)| id),
            created_at: now,
            kind: args.kind,
            channel: args.channel,
            tags,
            content,
        },
    );
    let mut failed = false;
    for relay in &args.relays {
        let resp = client
            .post(format!("{}/v1/payloads", base(relay)))
            .header("content-type", "application/json")
            .body(payload.to_json())
            .send()
            .await
            .with_context(|| format!("publishing to {relay}"))?;
        match resp.status().as_u16() {
            200 | 201 => {
                let v: Value = resp.json().await?;
                let what = if v["duplicate"] == json!(true) {
                    "duplicate"
                } else {
                    "stored"
                };
                println!("{relay}\t{what}\tseq {}\t{}", payload.seq, payload.id);
            }
            _ => {
                failed = true;
                eprintln!("{relay}\trefused\t{}", describe_error(resp).await);
            }
        }
    }
    Ok(if failed {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
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

/// The highest head any of the relays holds for `author` (ties: lowest id):
/// the next entry chains to it.
async fn highest_head(
    client: &reqwest::Client,
    relays: &[String],
    author: &str,
) -> anyhow::Result<Option<(u64, String)>> {
    let mut head: Option<(u64, String)> = None;
    for relay in relays {
        let resp = client
            .get(format!("{}/v1/authors/{author}/head", base(relay)))
            .send()
            .await
            .with_context(|| format!("asking {relay} for the author's head"))?;
        match resp.status().as_u16() {
            200 => {
                let v: Value = resp.json().await?;
                let seq = v["seq"]
                    .as_u64()
                    .ok_or_else(|| anyhow!("{relay}: head without seq"))?;
                let id = v["id"].as_str().unwrap_or_default().to_string();
                if head
                    .as_ref()
                    .is_none_or(|(s, i)| seq > *s || (seq == *s && id < *i))
                {
                    head = Some((seq, id));
                }
            }
            404 => {}
            _ => bail!("{relay}: {}", describe_error(resp).await),
        }
    }
    Ok(head)
}

pub async fn query(args: QueryArgs) -> anyhow::Result<ExitCode> {
    let f = args.filter.to_filter()?;
    let mut params: Vec<(String, String)> = Vec::new();
    let mut push_list = |k: &str, v: &Option<Vec<String>>| {
        if let Some(v) = v {
            params.push((k.to_string(), v.join(",")));
        }
    };
    push_list("authors", &f.authors);
    push_list("kinds", &f.kinds);
    push_list("channels", &f.channels);
    if !args.ids.is_empty() {
        params.push(("ids".into(), args.ids.join(",")));
    }
    for (name, values) in f.tags.iter().flatten() {
        params.push((format!("tag_{name}"), values.join(",")));
    }
    if let Some(s) = f.since {
        params.push(("since".into(), s.to_string()));
    }
    if let Some(u) = f.until {
        params.push(("until".into(), u.to_string()));
    }
    params.push(("limit".into(), args.limit.to_string()));
    let client = http()?;
    let mut cursor: Option<String> = None;
    loop {
        let mut page_params = params.clone();
        if let Some(c) = &cursor {
            page_params.push(("cursor".into(), c.clone()));
        }
        let resp = client
            .get(format!("{}/v1/payloads", base(&args.relay)))
            .query(&page_params)
            .send()
            .await
            .with_context(|| format!("querying {}", args.relay))?;
        if !resp.status().is_success() {
            bail!("{}", describe_error(resp).await);
        }
        let v: Value = resp.json().await?;
        for p in v["payloads"].as_array().into_iter().flatten() {
            println!("{p}");
        }
        cursor = v["next_cursor"].as_str().map(String::from);
        if !args.all || cursor.is_none() {
            break;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `ws://host/v1/ws` for `http://host`, `wss://` for `https://`.
pub fn ws_url(relay: &str) -> anyhow::Result<String> {
    let b = base(relay);
    if let Some(rest) = b.strip_prefix("http://") {
        Ok(format!("ws://{rest}/v1/ws"))
    } else if let Some(rest) = b.strip_prefix("https://") {
        Ok(format!("wss://{rest}/v1/ws"))
    } else {
        bail!("relay URL must start with http:// or https://, got {relay:?}")
    }
}

pub async fn subscribe(args: SubscribeArgs) -> anyhow::Result<ExitCode> {
    let mut filter = serde_json::to_value(args.filter.to_filter()?)?;
    filter["limit"] = json!(args.stored);
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_url(&args.relay)?)
        .await
        .with_context(|| format!("connecting to {}", args.relay))?;
    ws.send(Message::text(
        json!({"op": "subscribe", "sub": "cli", "filters": [filter]}).to_string(),
    ))
    .await?;
    let mut printed = 0u64;
    if args.count == Some(0) {
        return Ok(ExitCode::SUCCESS);
    }
    while let Some(msg) = ws.next().await {
        let msg = msg?;
        let Message::Text(text) = msg else {
            if let Message::Close(frame) = msg {
                bail!("{}", describe_close(frame.as_ref()));
            }
            continue;
        };
        let v: Value = serde_json::from_str(&text)?;
        match v["op"].as_str() {
            Some("payload") => {
                println!("{}", v["payload"]);
                printed += 1;
                if args.count.is_some_and(|c| printed >= c) {
                    break;
                }
            }
            Some("eose") => eprintln!("-- end of stored payloads; waiting for live ones"),
            Some("error") => bail!("{}: {}", v["code"], v["message"]),
            _ => {}
        }
    }
    let _ = ws.close(None).await;
    Ok(ExitCode::SUCCESS)
}

/// A WebSocket close in words: who closed, the code's meaning, the reason.
fn describe_close(frame: Option<&tokio_tungstenite::tungstenite::protocol::CloseFrame>) -> String {
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    let Some(frame) = frame else {
        return "the relay closed the connection without saying why".to_string();
    };
    let meaning = match frame.code {
        CloseCode::Normal => "normal closure",
        CloseCode::Away => "the relay is shutting down or restarting",
        CloseCode::Policy => "policy violation",
        CloseCode::Size => "a message was too large",
        CloseCode::Error => "the relay failed",
        CloseCode::Again => "the relay is overloaded; try again later",
        _ => "closed",
    };
    let code = u16::from(frame.code);
    match frame.reason.as_str() {
        "" => format!("the relay closed the connection: {meaning} (code {code})"),
        reason => format!("the relay closed the connection: {reason} ({meaning}, code {code})"),
    }
}

#[cfg(test)]
mod tests {
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;

    use super::describe_close;

    #[test]
    fn a_close_is_told_in_words() {
        let slow = CloseFrame {
            code: CloseCode::Policy,
            reason: "slow consumer".into(),
        };
        assert_eq!(
            describe_close(Some(&slow)),
            "the relay closed the connection: slow consumer (policy violation, code 1008)"
        );
        let away = CloseFrame {
            code: CloseCode::Away,
            reason: "".into(),
        };
        assert_eq!(
            describe_close(Some(&away)),
            "the relay closed the connection: the relay is shutting down or restarting (code 1001)"
        );
        assert!(describe_close(None).contains("without saying why"));
    }
}
