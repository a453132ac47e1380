//! Reading communities (PROTOCOL.md 9): their governance payloads, for the
//! state a client or the admin API asks for. Writes go through the writer.

use meshrelay_protocol::community::{Evaluation, GOVERNANCE_KINDS};
use meshrelay_protocol::Payload;
use sqlx::QueryBuilder;

use crate::{with_pool, Result, Store};

/// One community this node holds payloads of.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CommunitySummary {
    /// `g/<owner>/<name>`.
    pub community: String,
    pub payloads: i64,
    pub governance: i64,
    /// Payloads its governance holds back now.
    pub held_back: i64,
}

impl Store {
    /// The community's state (9.3) from every governance payload held, or
    /// `None` when this node holds no payload of the community.
    pub async fn community(&self, root: &str) -> Result<Option<Evaluation>> {
        let rows: Vec<(String, String)> = with_pool!(self, p => {
            let mut qb = QueryBuilder::new("SELECT kind, json FROM payloads WHERE community = ");
            qb.push_bind(root.to_string()).push(" AND (kind IN (");
            let mut sep = qb.separated(", ");
            for k in GOVERNANCE_KINDS {
                sep.push_bind(k.to_string());
            }
            qb.push(") OR rid = (SELECT MIN(rid) FROM payloads WHERE community = ")
                .push_bind(root.to_string())
                .push("))");
            qb.build_query_as().fetch_all(p).await?
        });
        if rows.is_empty() {
            return Ok(None);
        }
        let governance: Vec<Payload> = rows
            .iter()
            .filter(|(kind, _)| GOVERNANCE_KINDS.contains(&kind.as_str()))
            .filter_map(|(_, json)| serde_json::from_str(json).ok())
            .collect();
        Ok(Some(Evaluation::new(root, &governance)))
    }

    /// Every community held, by name.
    pub async fn communities(&self) -> Result<Vec<CommunitySummary>> {
        with_pool!(self, p => {
            let mut qb = QueryBuilder::new(
                "SELECT community, COUNT(*), SUM(CASE WHEN kind IN (",
            );
            let mut sep = qb.separated(", ");
            for k in GOVERNANCE_KINDS {
                sep.push_bind(k.to_string());
            }
            qb.push(") THEN 1 ELSE 0 END), SUM(CASE WHEN held_back THEN 1 ELSE 0 END) \
                     FROM payloads WHERE community IS NOT NULL GROUP BY community ORDER BY community");
            let rows: Vec<(String, i64, i64, i64)> = qb.build_query_as().fetch_all(p).await?;
            Ok(rows
                .into_iter()
                .map(|(community, payloads, governance, held_back)| CommunitySummary {
                    community,
                    payloads,
                    governance,
                    held_back,
                })
                .collect())
        })
    }

    /// A community's `moderate` payloads, newest first.
    pub async fn recent_moderations(&self, root: &str, n: i64) -> Result<Vec<Payload>> {
        let rows: Vec<String> = with_pool!(self, p => {
            let mut qb = QueryBuilder::new("SELECT json FROM payloads WHERE community = ");
            qb.push_bind(root.to_string())
                .push(" AND kind = 'moderate' ORDER BY created_at DESC, id LIMIT ")
                .push_bind(n);
            qb.build_query_scalar().fetch_all(p).await?
        });
        Ok(rows
            .iter()
            .filter_map(|j| serde_json::from_str(j).ok())
            .collect())
    }
}
