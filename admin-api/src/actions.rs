//! The changes an operator can make, shared by the JSON API and the dashboard.
//! Each one that is carried out is written to the audit log, with who asked.

use meshrelay_federation::JoinError;
use meshrelay_protocol::ErrorCode;
use meshrelay_store::Peer;
use meshrelay_store::PeerStatus;

use crate::{is_hex64, unix_now, Actor, AdminContext, AdminError, AdminResult};

/// What can be done to a known peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerAction {
    Approve,
    Block,
    Unblock,
    Poll,
}

impl PeerAction {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "approve" => Self::Approve,
            "block" => Self::Block,
            "unblock" => Self::Unblock,
            "poll" => Self::Poll,
            _ => return None,
        })
    }
    pub fn verb(self) -> &'static str {
        match self {
            Self::Approve => "approve",
            Self::Block => "block",
            Self::Unblock => "unblock",
            Self::Poll => "poll",
        }
    }
}

async fn audit(
    ctx: &AdminContext,
    actor: &Actor,
    action: &str,
    target: &str,
    detail: Option<&str>,
) -> AdminResult<()> {
    ctx.store
        .insert_audit(unix_now(), action, target, &actor.from, actor.via, detail)
        .await?;
    tracing::info!(action, target, from = %actor.from, via = actor.via, detail, "admin change");
    Ok(())
}

fn join_error(e: JoinError) -> AdminError {
    match e {
        JoinError::Store(e) => e.into(),
        e => {
            let (code, status) = e.answer().unwrap_or((ErrorCode::Internal, 500));
            AdminError::new(code, e.to_string()).with_status(status)
        }
    }
}

/// Add a peer by URL: fetch and check its document, pin its key, announce.
pub async fn add_peer(ctx: &AdminContext, actor: &Actor, url: &str) -> AdminResult<Peer> {
    let url = url.trim();
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(AdminError::bad_request(
            "url must be an http:// or https:// URL",
        ));
    }
    let peer = ctx.federation.join(url).await.map_err(join_error)?;
    audit(
        ctx,
        actor,
        "add",
        &format!("peer:{}", peer.node),
        Some(&format!("{} ({})", peer.url, peer.status)),
    )
    .await?;
    Ok(peer)
}

/// Approve, block, unblock or poll a known peer.
pub async fn peer_action(
    ctx: &AdminContext,
    actor: &Actor,
    node: &str,
    action: PeerAction,
) -> AdminResult<Peer> {
    let Some(before) = ctx.store.peer(node).await? else {
        return Err(AdminError::not_found("no peer with this node key"));
    };
    let target = format!("peer:{node}");
    let (peer, detail) = match action {
        PeerAction::Approve if before.status == PeerStatus::KeyChanged => {
            // The URL now answers with another key: approving pins the new one.
            ctx.federation.forget_peer(node).await?;
            let peer = ctx.federation.join(&before.url).await.map_err(join_error)?;
            let detail = format!("key changed: re-pinned {} as {}", before.url, peer.node);
            (peer, detail)
        }
        PeerAction::Approve | PeerAction::Unblock => {
            let peer = ctx
                .federation
                .set_peer_status(node, PeerStatus::Active)
                .await?
                .ok_or_else(|| AdminError::not_found("no peer with this node key"))?;
            (peer, format!("{} -> active", before.status))
        }
        PeerAction::Block => {
            let peer = ctx
                .federation
                .set_peer_status(node, PeerStatus::Blocked)
                .await?
                .ok_or_else(|| AdminError::not_found("no peer with this node key"))?;
            (peer, format!("{} -> blocked", before.status))
        }
        PeerAction::Poll => {
            let (peer, outcome) = ctx
                .federation
                .poll_now(node)
                .await?
                .ok_or_else(|| AdminError::not_found("no peer with this node key"))?;
            let detail = match outcome {
                Ok(true) => "polled".to_string(),
                Ok(false) => "its key changed".to_string(),
                Err(e) => format!("poll failed: {e}"),
            };
            (peer, detail)
        }
    };
    audit(ctx, actor, action.verb(), &target, Some(&detail)).await?;
    Ok(peer)
}

pub async fn remove_peer(ctx: &AdminContext, actor: &Actor, node: &str) -> AdminResult<()> {
    let Some(before) = ctx.store.peer(node).await? else {
        return Err(AdminError::not_found("no peer with this node key"));
    };
    ctx.federation.forget_peer(node).await?;
    audit(
        ctx,
        actor,
        "remove",
        &format!("peer:{node}"),
        Some(&before.url),
    )
    .await
}

pub async fn block_author(
    ctx: &AdminContext,
    actor: &Actor,
    key: &str,
    block: bool,
) -> AdminResult<bool> {
    if !is_hex64(key) {
        return Err(AdminError::bad_request(
            "an author key is 64 lowercase hex characters",
        ));
    }
    let changed = if block {
        ctx.store.block_author(key, unix_now()).await?
    } else {
        let changed = ctx.store.unblock_author(key).await?;
        if !changed {
            return Err(AdminError::not_found("this author is not blocked"));
        }
        changed
    };
    let verb = if block { "block" } else { "unblock" };
    let detail = (!changed).then_some("already blocked");
    audit(ctx, actor, verb, &format!("author:{key}"), detail).await?;
    Ok(changed)
}

pub async fn hide_payload(ctx: &AdminContext, actor: &Actor, id: &str) -> AdminResult<bool> {
    if !is_hex64(id) {
        return Err(AdminError::new(
            ErrorCode::InvalidId,
            "a payload id is 64 lowercase hex characters",
        ));
    }
    if !ctx.store.payload_exists(id).await? {
        return Err(AdminError::not_found("no payload with this id"));
    }
    let changed = ctx.store.hide_payload(id).await?;
    let detail = (!changed).then_some("already hidden");
    audit(ctx, actor, "hide", &format!("payload:{id}"), detail).await?;
    Ok(changed)
}

/// Remove a blob (PROTOCOL.md 7): tombstone first, so no upload or mirror
/// can bring it back while its bytes are deleted; returns whether it was
/// not removed before, and the bytes freed.
pub async fn remove_blob(
    ctx: &AdminContext,
    actor: &Actor,
    sha256: &str,
) -> AdminResult<(bool, i64)> {
    let before = ctx.store.remove_blob(sha256, unix_now()).await?;
    let changed = before.as_ref().is_none_or(|r| r.removed_at.is_none());
    let freed = match &before {
        Some(r) if r.removed_at.is_none() => r.size,
        _ => 0,
    };
    ctx.blobs.delete(sha256).await.map_err(|e| {
        tracing::error!(error = %e, sha256, "deleting a removed blob's bytes failed");
        AdminError::new(
            ErrorCode::Internal,
            "the blob is removed, but deleting its bytes failed",
        )
    })?;
    let detail = match &before {
        None => Some("not held: refused from now on".to_string()),
        Some(r) if r.removed_at.is_some() => Some("already removed".to_string()),
        Some(r) => Some(format!(
            "{} bytes, {} references",
            r.size,
            r.references.unwrap_or(0)
        )),
    };
    audit(
        ctx,
        actor,
        "remove",
        &format!("blob:{sha256}"),
        detail.as_deref(),
    )
    .await?;
    Ok((changed, freed))
}

pub async fn retry_deliveries(
    ctx: &AdminContext,
    actor: &Actor,
    ids: Option<&[i64]>,
) -> AdminResult<u64> {
    let now_ms = meshrelay_protocol::clock::now_ms();
    let n = ctx.store.retry_dead(ids, now_ms).await?;
    ctx.federation.wake_all();
    let target = match ids {
        None => "deliveries:dead".to_string(),
        Some(ids) => format!(
            "deliveries:{}",
            ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",")
        ),
    };
    audit(
        ctx,
        actor,
        "retry",
        &target,
        Some(&format!("{n} put back in the queue")),
    )
    .await?;
    Ok(n)
}

/// An operator started a sync (with one peer's URL, or `peers` for all).
pub async fn record_sync(ctx: &AdminContext, actor: &Actor, target: &str) -> AdminResult<()> {
    audit(ctx, actor, "sync", &format!("sync:{target}"), None).await
}

pub async fn run_job(ctx: &AdminContext, actor: &Actor, name: &str) -> AdminResult<()> {
    use meshrelay_scheduler::Error;
    match ctx.scheduler.trigger(name).await {
        Ok(()) => audit(ctx, actor, "run", &format!("job:{name}"), None).await,
        Err(Error::UnknownJob(_)) => Err(AdminError::not_found(format!("no job named {name}"))),
        Err(Error::AlreadyRunning(_)) => Err(AdminError::new(
            ErrorCode::Conflict,
            format!("{name} is running now"),
        )),
        Err(e) => {
            tracing::error!(error = %e, "triggering a job failed");
            Err(AdminError::new(ErrorCode::Internal, "internal error"))
        }
    }
}

/// Dashboard sign-ins (and failed attempts) are recorded too.
pub async fn record_login(ctx: &AdminContext, actor: &Actor, ok: bool) -> AdminResult<()> {
    let verb = if ok { "login" } else { "login_failed" };
    audit(ctx, actor, verb, "dashboard", None).await
}

pub async fn record_logout(ctx: &AdminContext, actor: &Actor) -> AdminResult<()> {
    audit(ctx, actor, "logout", "dashboard", None).await
}
