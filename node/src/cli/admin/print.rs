//! The tables and lines `meshrelay admin` prints for people, one function per
//! kind of answer.

use std::fmt::Display;

use comfy_table::{presets::UTF8_FULL_CONDENSED, ContentArrangement, Table};
use meshrelay_admin_api::types::{
    AuditView, AuthorBlock, BlockedAuthor, Delivery, HiddenPayload, JobStarted, JobView, PeerView,
    Retried, Stats,
};

fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(header.iter().copied());
    t
}

/// An optional value as a cell: absent as a dash.
fn cell(v: Option<impl Display>) -> String {
    v.map_or("-".to_string(), |v| v.to_string())
}

/// Unix seconds as UTC time.
fn time(t: Option<i64>) -> String {
    t.and_then(|t| chrono::DateTime::from_timestamp(t, 0))
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

pub(super) fn stats(s: &Stats) {
    let mut t = table(&["stat", "value"]);
    let (p, r) = (&s.payloads, &s.rates);
    let rate = |x: Option<f64>| x.map_or("-".to_string(), |x| format!("{x:.1}/s"));
    for (k, val) in [
        ("node", s.node.clone()),
        ("version", s.version.clone()),
        ("uptime", format!("{} s", s.uptime_secs)),
        (
            "database",
            format!("{}, {} bytes", s.database.backend, s.database.size_bytes),
        ),
        ("payloads stored", p.stored.to_string()),
        ("payloads hidden", p.hidden.to_string()),
        ("received, last hour", p.received_last_hour.to_string()),
        ("received, last day", p.received_last_day.to_string()),
        ("ingest", rate(r.ingest_per_sec)),
        ("forwarding", rate(r.forward_per_sec)),
        ("connections", s.connections.to_string()),
        ("subscriptions", s.subscriptions.to_string()),
        ("outbox pending", s.outbox.pending.to_string()),
        ("dead letters", s.dead_letters.to_string()),
    ] {
        t.add_row(vec![k.to_string(), val]);
    }
    println!("{t}");
    if !s.outbox.peers.is_empty() {
        print_rows(
            &["peer", "pending", "dead"],
            s.outbox
                .peers
                .iter()
                .map(|p| vec![p.node.clone(), p.pending.to_string(), p.dead.to_string()]),
        );
    }
}

pub(super) fn peers(peers: &[PeerView]) {
    print_rows(
        &[
            "node",
            "url",
            "status",
            "last poll (UTC)",
            "forwarding",
            "health",
        ],
        peers.iter().map(|p| {
            let h = &p.health;
            vec![
                p.node.clone(),
                p.url.clone(),
                p.status.to_string(),
                time(p.last_poll),
                p.forwarding.to_string(),
                format!("{} ({} pending, {} dead)", h.state, h.pending, h.dead),
            ]
        }),
    )
}

pub(super) fn blocked_authors(authors: &[BlockedAuthor]) {
    print_rows(
        &["author", "blocked at (UTC)"],
        authors
            .iter()
            .map(|a| vec![a.author.clone(), time(Some(a.blocked_at))]),
    )
}

pub(super) fn author_block(b: &AuthorBlock) {
    let state = if b.blocked { "blocked" } else { "unblocked" };
    println!("{}: {state}", b.author);
}

pub(super) fn hidden(h: &HiddenPayload) {
    let already = if h.changed { "" } else { " (already)" };
    println!("{}: hidden{already}", h.id);
}

pub(super) fn deliveries(deliveries: &[Delivery]) {
    print_rows(
        &["id", "peer", "payload", "attempts", "last error"],
        deliveries.iter().map(|d| {
            vec![
                d.id.to_string(),
                d.peer.clone(),
                d.payload.clone(),
                d.attempts.to_string(),
                cell(d.last_error.as_ref()),
            ]
        }),
    )
}

pub(super) fn retried(r: &Retried) {
    println!("{} put back in the queue", r.retried);
}

pub(super) fn jobs(jobs: &[JobView]) {
    print_rows(
        &[
            "job",
            "schedule",
            "last run (UTC)",
            "outcome",
            "message",
            "next run (UTC)",
        ],
        jobs.iter().map(|j| {
            vec![
                j.name.clone(),
                j.schedule.clone(),
                time(j.last_run),
                cell(j.last_outcome.as_ref()),
                cell(j.last_message.as_ref()),
                time(j.next_run),
            ]
        }),
    )
}

pub(super) fn job_started(s: &JobStarted) {
    println!("{}: {}", s.job, s.status);
}

pub(super) fn audit(entries: &[AuditView]) {
    print_rows(
        &["at (UTC)", "action", "target", "from", "detail"],
        entries.iter().map(|e| {
            vec![
                time(Some(e.at)),
                e.action.clone(),
                e.target.clone(),
                format!("{} ({})", e.from, e.via),
                cell(e.detail.as_ref()),
            ]
        }),
    )
}
