//! The operators' dashboard at `/admin/`: server-rendered HTML (maud), no
//! script. It signs in with the admin token and then keeps only a random
//! session id in a cookie (HttpOnly, SameSite=Strict, Path=/admin); every form
//! carries the session's CSRF token, and the sign-in form a one-time token.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Form;
use maud::{html, Markup};
use serde::Deserialize;
use subtle::ConstantTimeEq;

use crate::actions::{self, PeerAction};
use crate::api::{audit_views, job_views, peer_views};
use crate::stats::{gather, series};
use crate::{Actor, AdminContext, AdminError};

mod sections;
use sections::{communities_section, forwarding_title, page, processes_section, short_target};

const COOKIE: &str = "meshrelay_admin";

/// A signed-in browser.
pub struct Session {
    csrf: String,
    /// One message to show on the next page: (is it an error, text).
    flash: Mutex<Option<(bool, String)>>,
}

pub fn router(ctx: AdminContext) -> axum::Router {
    axum::Router::new()
        .route("/admin", get(|| async { Redirect::to("/admin/") }))
        .route("/admin/", get(index))
        .route("/admin/login", post(login))
        .route("/admin/logout", post(logout))
        .route("/admin/peers", post(add_peer))
        .route("/admin/peers/{node}/{action}", post(peer_action))
        .route("/admin/jobs/{name}/run", post(run_job))
        .route("/admin/deliveries/retry", post(retry))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(ctx)
}

async fn security_headers(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    resp
}

fn random_token() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

fn session_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, v)| v.to_string())
}

fn session(ctx: &AdminContext, headers: &HeaderMap) -> Option<(String, Arc<Session>)> {
    let sid = session_id(headers)?;
    let s = ctx.sessions.get(&sid)?;
    Some((sid, s))
}

fn actor(addr: SocketAddr) -> Actor {
    Actor {
        from: addr.ip().to_string(),
        via: "dashboard",
    }
}

fn csrf_ok(s: &Session, given: &str) -> bool {
    s.csrf.as_bytes().ct_eq(given.as_bytes()).into()
}

async fn index(State(ctx): State<AdminContext>, headers: HeaderMap) -> Response {
    match session(&ctx, &headers) {
        Some((_, s)) => match dashboard(&ctx, &s).await {
            Ok(page) => page.into_response(),
            Err(e) => e.into_response(),
        },
        None => login_page(&ctx, None, StatusCode::OK),
    }
}

fn login_page(ctx: &AdminContext, error: Option<&str>, status: StatusCode) -> Response {
    let form_token = random_token();
    ctx.login_forms.insert(form_token.clone(), ());
    let body = page(
        "Sign in",
        html! {
            main.login {
                h1 { "meshrelay admin" }
                p.muted { "Node " code { (short(&ctx.node)) } }
                @if let Some(e) = error { p.flash.error role="alert" { (e) } }
                form method="post" action="/admin/login" {
                    input type="hidden" name="form" value=(form_token);
                    label for="token" { "Admin token" }
                    input #token type="password" name="token" autocomplete="current-password" required autofocus;
                    button type="submit" { "Sign in" }
                }
                p.muted { "The token is the " code { "admin_token" } " setting, or the file "
                    code { "admin.token" } " in the node's data directory." }
            }
        },
    );
    (status, body).into_response()
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
    form: String,
}

async fn login(
    State(ctx): State<AdminContext>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    Form(f): Form<LoginForm>,
) -> Response {
    // The one-time form token: a sign-in cannot be forged from another site.
    if ctx.login_forms.remove(&f.form).is_none() {
        return login_page(
            &ctx,
            Some("The sign-in form expired; try again."),
            StatusCode::FORBIDDEN,
        );
    }
    let ok = ctx.token_matches(f.token.trim());
    if let Err(e) = actions::record_login(&ctx, &actor(addr), ok).await {
        return e.into_response();
    }
    if !ok {
        return login_page(&ctx, Some("Wrong admin token."), StatusCode::UNAUTHORIZED);
    }
    let sid = random_token();
    ctx.sessions.insert(
        sid.clone(),
        Arc::new(Session {
            csrf: random_token(),
            flash: Mutex::new(None),
        }),
    );
    let secure = if ctx.secure_cookie { "; Secure" } else { "" };
    let cookie = format!("{COOKIE}={sid}; Path=/admin; HttpOnly; SameSite=Strict{secure}");
    (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, "/admin/".to_string()),
            (header::SET_COOKIE, cookie),
        ],
    )
        .into_response()
}

#[derive(Deserialize)]
struct CsrfForm {
    csrf: String,
}

#[derive(Deserialize)]
struct AddPeerForm {
    csrf: String,
    url: String,
}

/// Check the session and its CSRF token, run `f`, and come back to the page
/// with its outcome as a message.
async fn with_session<F, Fut>(ctx: &AdminContext, headers: &HeaderMap, csrf: &str, f: F) -> Response
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<String, AdminError>>,
{
    let Some((_, s)) = session(ctx, headers) else {
        return login_page(
            ctx,
            Some("Your session ended; sign in again."),
            StatusCode::UNAUTHORIZED,
        );
    };
    if !csrf_ok(&s, csrf) {
        return (StatusCode::FORBIDDEN, "CSRF token missing or wrong").into_response();
    }
    let flash = match f().await {
        Ok(msg) => (false, msg),
        Err(e) => (true, format!("{}: {}", e.code.as_str(), e.message)),
    };
    *s.flash.lock().expect("lock") = Some(flash);
    Redirect::to("/admin/").into_response()
}

async fn logout(
    State(ctx): State<AdminContext>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(f): Form<CsrfForm>,
) -> Response {
    let Some((sid, s)) = session(&ctx, &headers) else {
        return Redirect::to("/admin/").into_response();
    };
    if !csrf_ok(&s, &f.csrf) {
        return (StatusCode::FORBIDDEN, "CSRF token missing or wrong").into_response();
    }
    ctx.sessions.invalidate(&sid);
    if let Err(e) = actions::record_logout(&ctx, &actor(addr)).await {
        return e.into_response();
    }
    let cookie = format!("{COOKIE}=; Path=/admin; HttpOnly; SameSite=Strict; Max-Age=0");
    (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, "/admin/".to_string()),
            (header::SET_COOKIE, cookie),
        ],
    )
        .into_response()
}

async fn add_peer(
    State(ctx): State<AdminContext>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(f): Form<AddPeerForm>,
) -> Response {
    with_session(&ctx, &headers, &f.csrf, || async {
        let p = actions::add_peer(&ctx, &actor(addr), &f.url).await?;
        Ok(format!(
            "Added {} ({}), {}.",
            p.url,
            short(&p.node),
            p.status
        ))
    })
    .await
}

async fn peer_action(
    State(ctx): State<AdminContext>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    Path((node, action)): Path<(String, String)>,
    headers: HeaderMap,
    Form(f): Form<CsrfForm>,
) -> Response {
    with_session(&ctx, &headers, &f.csrf, || async {
        let action = PeerAction::parse(&action)
            .ok_or_else(|| AdminError::not_found("no such peer action"))?;
        let p = actions::peer_action(&ctx, &actor(addr), &node, action).await?;
        Ok(format!("{}: {} is now {}.", action.verb(), p.url, p.status))
    })
    .await
}

async fn run_job(
    State(ctx): State<AdminContext>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    Path(name): Path<String>,
    headers: HeaderMap,
    Form(f): Form<CsrfForm>,
) -> Response {
    with_session(&ctx, &headers, &f.csrf, || async {
        actions::run_job(&ctx, &actor(addr), &name).await?;
        Ok(format!("Started {name}."))
    })
    .await
}

async fn retry(
    State(ctx): State<AdminContext>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(f): Form<CsrfForm>,
) -> Response {
    with_session(&ctx, &headers, &f.csrf, || async {
        let n = actions::retry_deliveries(&ctx, &actor(addr), None).await?;
        Ok(format!("{n} dead letters put back in the queue."))
    })
    .await
}

fn short(key: &str) -> String {
    if key.len() > 16 {
        format!("{}…{}", &key[..8], &key[key.len() - 4..])
    } else {
        key.to_string()
    }
}

fn when(t: Option<i64>) -> String {
    match t.and_then(|t| chrono::DateTime::from_timestamp(t, 0)) {
        Some(d) => d.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        None => "—".to_string(),
    }
}

fn bytes(n: i64) -> String {
    let n = n as f64;
    if n >= 1e9 {
        format!("{:.1} GB", n / 1e9)
    } else if n >= 1e6 {
        format!("{:.1} MB", n / 1e6)
    } else {
        format!("{:.0} kB", n / 1e3)
    }
}

fn rate(r: Option<f64>) -> String {
    r.map_or("—".to_string(), |r| format!("{r:.1}/s"))
}

/// A line chart of the last 24 hours as inline SVG.
fn chart(title: &str, unit: &str, points: &[(i64, f64)]) -> Markup {
    let (w, h) = (600.0, 140.0);
    let now = crate::api::now() as f64;
    let start = now - 24.0 * 3600.0;
    let max = points.iter().map(|p| p.1).fold(0.0f64, f64::max);
    let top = if max > 0.0 { max * 1.1 } else { 1.0 };
    let line: Vec<String> = points
        .iter()
        .map(|(t, v)| {
            let x = ((*t as f64 - start) / (now - start)).clamp(0.0, 1.0) * w;
            let y = h - (v / top) * h;
            format!("{x:.1},{y:.1}")
        })
        .collect();
    let last = points.last().map(|p| p.1);
    html! {
        figure.chart {
            figcaption {
                (title) " — now " strong { (last.map_or("—".to_string(), |v| format!("{v:.0}"))) } " " (unit)
                span.muted { " (peak " (format!("{max:.0}")) ")" }
            }
            @if points.len() < 2 {
                p.muted { "Not enough samples yet: one is taken every minute." }
            } @else {
                svg viewBox=(format!("0 0 {w} {h}")) width="100%" height="140" role="img" aria-label=(title) {
                    line x1="0" y1=(h) x2=(w) y2=(h) stroke="#bbb" {}
                    polyline fill="none" stroke="#2463eb" stroke-width="2" points=(line.join(" ")) {}
                }
                div.axis { span { "24 h ago" } span { "now" } }
            }
        }
    }
}

fn csrf_field(s: &Session) -> Markup {
    html! { input type="hidden" name="csrf" value=(s.csrf); }
}

fn action_button(s: &Session, node: &str, action: &str, label: &str) -> Markup {
    html! {
        form.inline method="post" action=(format!("/admin/peers/{node}/{action}")) {
            (csrf_field(s))
            button type="submit" name="do" value=(action) data-action=(action) { (label) }
        }
    }
}

async fn dashboard(ctx: &AdminContext, s: &Session) -> Result<Markup, AdminError> {
    let stats = gather(ctx).await?;
    let peers = peer_views(ctx).await?;
    let jobs = job_views(ctx).await?;
    let audit = audit_views(ctx, None, 25).await?;
    let communities = crate::api::communities::views(ctx).await?;
    let samples = series(&ctx.store).await?;
    let ingest: Vec<(i64, f64)> = samples.iter().map(|s| (s.0, s.1)).collect();
    let queue: Vec<(i64, f64)> = samples.iter().map(|s| (s.0, s.2 as f64)).collect();
    let flash = s.flash.lock().expect("lock").take();
    Ok(page(
        "Dashboard",
        html! {
            header {
                h1 { "meshrelay admin" }
                div.muted {
                    "Node " code title=(ctx.node) { (short(&ctx.node)) } " · "
                    (ctx.public_url) " · version " (stats.version) " · up "
                    (format!("{}h {}m", stats.uptime_secs / 3600, stats.uptime_secs % 3600 / 60))
                }
                form.inline method="post" action="/admin/logout" {
                    (csrf_field(s)) button type="submit" { "Sign out" }
                }
            }
            @if let Some((is_err, msg)) = flash {
                p.flash.error[is_err] role="status" { (msg) }
            }
            section #health {
                h2 { "Health" }
                div.cards {
                    div.card { span.label { "Payloads stored" } strong { (stats.payloads.stored) } }
                    div.card { span.label { "Received, last hour" } strong { (stats.payloads.received_last_hour) } }
                    div.card { span.label { "Received, last day" } strong { (stats.payloads.received_last_day) } }
                    div.card { span.label { "Ingest" } strong { (rate(stats.rates.ingest_per_sec)) } }
                    div.card { span.label { "Forwarding" } strong { (rate(stats.rates.forward_per_sec)) } }
                    div.card { span.label { "Connections" } strong { (stats.connections) } }
                    div.card { span.label { "Subscriptions" } strong { (stats.subscriptions) } }
                    div.card { span.label { "Outbox pending" } strong { (stats.outbox.pending) } }
                    div.card.warn[stats.dead_letters > 0] { span.label { "Dead letters" } strong { (stats.dead_letters) } }
                    div.card { span.label { "Database" } strong { (stats.database.backend) " · " (bytes(stats.database.size_bytes)) } }
                    div.card { span.label { "Blobs (" (stats.blobs.storage) ")" } strong { (stats.blobs.count) " · " (bytes(stats.blobs.bytes)) } }
                    @for cert in &stats.certificates {
                        div.card.warn[cert.days_left < 14] {
                            span.label { "TLS certificate (" (cert.listener) ")" }
                            strong { "expires in " (cert.days_left) " days" }
                        }
                    }
                }
                @if stats.dead_letters > 0 {
                    form.inline method="post" action="/admin/deliveries/retry" {
                        (csrf_field(s)) button type="submit" { "Retry all dead letters" }
                    }
                }
            }
            (processes_section(&stats.processes))
            section #charts {
                h2 { "Last 24 hours" }
                div.charts {
                    (chart("Ingest", "payloads/min", &ingest))
                    (chart("Outbox queue depth", "items", &queue))
                }
            }
            section #peers {
                h2 { "Peers" }
                @if peers.is_empty() {
                    p.muted { "No peers yet." }
                } @else {
                    table {
                        thead { tr { th { "Node" } th { "URL" } th { "Status" } th { "Wants" } th { "Last poll" } th { "Forwarding" } th { "Delivery" } th { "Actions" } } }
                        tbody {
                            @for p in &peers {
                                tr data-node=(p.node) {
                                    td { code title=(p.node) { (short(&p.node)) } }
                                    td { (p.url) }
                                    td { span class=(format!("status {}", p.status)) data-status=(p.status) { (p.status) } }
                                    td.small { code { (subscribe_summary(&p.subscribe)) } }
                                    td.small { (when(p.last_poll)) }
                                    td.small data-forwarding=(p.forwarding) title=(forwarding_title(p)) { (p.forwarding) }
                                    td.small {
                                        span class=(format!("health {}", p.health.state)) { (p.health.state) }
                                        " · " (p.health.pending) " pending · " (p.health.dead) " dead"
                                        @if p.health.delivery_failures > 0 { " · " (p.health.delivery_failures) " failures" }
                                    }
                                    td.actions {
                                        @if p.status.awaits_operator() {
                                            (action_button(s, &p.node, "approve", "Approve"))
                                        }
                                        @if p.status == meshrelay_store::PeerStatus::Blocked {
                                            (action_button(s, &p.node, "unblock", "Unblock"))
                                        } @else {
                                            (action_button(s, &p.node, "block", "Block"))
                                        }
                                        (action_button(s, &p.node, "poll", "Poll"))
                                    }
                                }
                            }
                        }
                    }
                }
                form.add method="post" action="/admin/peers" {
                    (csrf_field(s))
                    label for="url" { "Add a peer by URL " }
                    input #url type="url" name="url" placeholder="https://relay.example.org" required;
                    button type="submit" { "Add" }
                }
            }
            section #jobs {
                h2 { "Jobs" }
                table {
                    thead { tr { th { "Job" } th { "Schedule (UTC)" } th { "Last run" } th { "Outcome" } th { "Message" } th { "Next run" } th {} } }
                    tbody {
                        @for j in &jobs {
                            tr data-job=(j.name) {
                                td { (j.name) }
                                td { code { (j.schedule) } }
                                td.small { (when(j.last_run)) }
                                td { @if let Some(o) = &j.last_outcome { span class=(format!("outcome {o}")) { (o) } } @else { "—" } }
                                td.small.message { (j.last_message.as_deref().unwrap_or("")) }
                                td.small { (when(j.next_run)) }
                                td {
                                    form.inline method="post" action=(format!("/admin/jobs/{}/run", j.name)) {
                                        (csrf_field(s)) button type="submit" { "Run now" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            (communities_section(&communities))
            section #audit {
                h2 { "Audit log" }
                @if audit.is_empty() {
                    p.muted { "No changes yet." }
                } @else {
                    table {
                        thead { tr { th { "When" } th { "Action" } th { "Target" } th { "From" } th { "Detail" } } }
                        tbody {
                            @for e in &audit {
                                tr {
                                    td.small { (when(Some(e.at))) }
                                    td { (e.action) }
                                    td.small { code { (short_target(&e.target)) } }
                                    td.small { (e.from) " (" (e.via) ")" }
                                    td.small { (e.detail.as_deref().unwrap_or("")) }
                                }
                            }
                        }
                    }
                }
            }
        },
    ))
}

/// A peer's preference in one short line.
fn subscribe_summary(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => "not polled yet".to_string(),
        v => {
            let s = v.to_string();
            if s.chars().count() > 60 {
                format!("{}…", s.chars().take(60).collect::<String>())
            } else {
                s
            }
        }
    }
}
