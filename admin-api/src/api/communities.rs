//! `/admin/v1/communities`: the communities this node holds payloads of
//! (PROTOCOL.md 9), with their members by role and recent moderation.

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::ErrorBody;
use crate::{AdminContext, AdminResult};

/// Moderations listed per community.
const RECENT: i64 = 5;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Communities {
    pub communities: Vec<CommunityView>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CommunityView {
    /// `g/<owner>/<name>`.
    pub community: String,
    pub owner: String,
    /// Keys with a role now, by role (`admin`, `moderator`, `member`,
    /// `banned`); the owner not counted.
    pub admins: usize,
    pub moderators: usize,
    pub members: usize,
    pub banned: usize,
    /// Payloads held, governance payloads among them, and payloads its
    /// governance holds back now.
    pub payloads: i64,
    pub governance: i64,
    pub held_back: i64,
    /// The newest moderations, newest first.
    pub recent_moderation: Vec<Moderation>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Moderation {
    pub id: String,
    pub by: String,
    pub created_at: u64,
    /// The payload ids it names.
    pub targets: Vec<String>,
}

/// Every community held, with member counts and recent moderation.
#[utoipa::path(get, path = "/admin/v1/communities", responses((status = 200, body = Communities), (status = 401, body = ErrorBody)))]
pub(super) async fn list_communities(
    State(ctx): State<AdminContext>,
) -> AdminResult<Json<Communities>> {
    Ok(Json(Communities {
        communities: views(&ctx).await?,
    }))
}

pub(crate) async fn views(
    ctx: &AdminContext,
) -> Result<Vec<CommunityView>, meshrelay_store::Error> {
    let mut out = Vec::new();
    for summary in ctx.store.communities().await? {
        let Some(evaluation) = ctx.store.community(&summary.community).await? else {
            continue;
        };
        let roles = evaluation.roles();
        let count = |rank: i8| roles.values().filter(|r| **r == rank).count();
        let recent_moderation = ctx
            .store
            .recent_moderations(&summary.community, RECENT)
            .await?
            .into_iter()
            .map(|p| Moderation {
                targets: p.tag_values("e").map(String::from).collect(),
                id: p.id,
                by: p.author,
                created_at: p.created_at,
            })
            .collect();
        out.push(CommunityView {
            owner: evaluation.owner.clone(),
            admins: count(3),
            moderators: count(2),
            members: count(1),
            banned: count(-1),
            community: summary.community,
            payloads: summary.payloads,
            governance: summary.governance,
            held_back: summary.held_back,
            recent_moderation,
        });
    }
    Ok(out)
}
