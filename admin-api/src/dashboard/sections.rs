//! The dashboard's larger pieces: the processes and communities tables, and
//! the page around every view with its style sheet.

use maud::{html, Markup, PreEscaped, DOCTYPE};

use super::{short, when};

/// The node's processes (PROTOCOL.md 8.1), one row each.
pub(super) fn processes_section(processes: &[crate::stats::ProcessStats]) -> Markup {
    html! {
        section #processes {
            h2 { "Processes" }
            table {
                thead { tr { th { "Instance" } th { "Started" } th { "Last seen" } th { "Connections" } th { "Subscriptions" } th { "Delivering to" } } }
                tbody {
                    @for p in processes {
                        tr {
                            td { code { (p.instance) } }
                            td.small { (when(Some(p.started_at))) }
                            td.small { (when(Some(p.last_seen))) }
                            td { (p.connections) }
                            td { (p.subscriptions) }
                            td { (p.delivering_to) " peers" }
                        }
                    }
                }
            }
        }
    }
}

pub(super) fn communities_section(
    communities: &[crate::api::communities::CommunityView],
) -> Markup {
    html! {
        section #communities {
            h2 { "Communities" }
            @if communities.is_empty() {
                p.muted { "No community payloads held." }
            } @else {
                table {
                    thead { tr {
                        th { "Community" } th { "Admins" } th { "Moderators" } th { "Members" }
                        th { "Banned" } th { "Payloads" } th { "Held back" } th { "Latest moderation" }
                    } }
                    tbody {
                        @for c in communities {
                            tr {
                                td.small { code title=(c.community) { (short_target(&c.community)) } }
                                td { (c.admins) } td { (c.moderators) } td { (c.members) }
                                td { (c.banned) } td { (c.payloads) } td { (c.held_back) }
                                td.small {
                                    @if let Some(m) = c.recent_moderation.first() {
                                        (when(Some(m.created_at as i64))) " by " code title=(m.by) { (short(&m.by)) }
                                        " (" (m.targets.len()) " named; " (c.recent_moderation.len()) " recent)"
                                    } @else { "none" }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Why a peer is forwarded to the way it is (PROTOCOL.md 5.6).
pub(super) fn forwarding_title(p: &crate::api::PeerView) -> &'static str {
    match (p.forwarding, p.answers_offers) {
        (meshrelay_store::Forwarding::Lazy, _) => {
            "offered ids only: its inbox answers were mostly duplicates"
        }
        (_, true) => "whole payloads; it answers offers, so it may become lazy",
        (_, false) => "whole payloads; its /v1/info does not say it answers offers",
    }
}

pub(super) fn short_target(t: &str) -> String {
    match t.split_once(':') {
        Some((kind, key)) if key.len() == 64 => format!("{kind}:{}", short(key)),
        _ => t.to_string(),
    }
}

pub(super) fn page(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · meshrelay" }
                style { (PreEscaped(CSS)) }
            }
            body { (body) }
        }
    }
}

const CSS: &str = r#"
body { font: 14px/1.45 system-ui, sans-serif; margin: 0 auto; max-width: 1200px; padding: 1rem 1.5rem; color: #1d2330; background: #f7f8fa; }
h1 { font-size: 1.4rem; margin: 0 0 .2rem; } h2 { font-size: 1.1rem; margin: 1.6rem 0 .6rem; }
header { display: flex; flex-wrap: wrap; align-items: baseline; gap: .4rem 1rem; }
header form { margin-left: auto; }
.muted { color: #687083; } .small { font-size: 12.5px; }
code { font: 12.5px ui-monospace, monospace; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(170px, 1fr)); gap: .6rem; }
.card { background: #fff; border: 1px solid #e1e4ea; border-radius: 6px; padding: .6rem .8rem; }
.card .label { display: block; color: #687083; font-size: 12px; } .card strong { font-size: 1.2rem; }
.card.warn { border-color: #e0a100; background: #fff8e1; }
.charts { display: grid; grid-template-columns: repeat(auto-fit, minmax(380px, 1fr)); gap: 1rem; }
.chart { background: #fff; border: 1px solid #e1e4ea; border-radius: 6px; margin: 0; padding: .6rem .8rem; }
.axis { display: flex; justify-content: space-between; color: #687083; font-size: 11px; }
table { border-collapse: collapse; width: 100%; background: #fff; border: 1px solid #e1e4ea; }
th, td { text-align: left; padding: .4rem .6rem; border-bottom: 1px solid #eef0f4; vertical-align: top; }
th { background: #f0f2f6; font-weight: 600; font-size: 12.5px; }
.status, .health, .outcome { padding: 1px 7px; border-radius: 10px; font-size: 12px; background: #e8eaef; }
.status.active, .health.ok, .outcome.ok { background: #dcf5e3; color: #14532d; }
.status.pending { background: #fff1c2; color: #713f12; }
.status.blocked, .status.key_changed, .health.failing, .outcome.error, .outcome.panicked { background: #fde0e0; color: #7f1d1d; }
.status.unreachable { background: #ffe7cc; color: #7c2d12; }
form.inline { display: inline; } .actions form { margin-right: .25rem; }
button { font: inherit; padding: .2rem .7rem; border: 1px solid #b9c0cc; border-radius: 4px; background: #fff; cursor: pointer; }
button:hover { background: #eef2ff; }
form.add { margin-top: .7rem; } input[type=url] { width: 22rem; padding: .25rem .4rem; }
.flash { padding: .5rem .8rem; border-radius: 5px; background: #dcf5e3; }
.flash.error { background: #fde0e0; }
.login { max-width: 26rem; margin: 4rem auto; background: #fff; border: 1px solid #e1e4ea; border-radius: 8px; padding: 1.5rem 2rem; }
.login input { display: block; width: 100%; box-sizing: border-box; margin: .3rem 0 .8rem; padding: .4rem; }
.message { max-width: 22rem; overflow-wrap: anywhere; }
"#;
