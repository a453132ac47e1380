//! Settings given as lists: a TOML array or one comma-separated string.

use serde::{Deserialize, Serialize};

/// A list written either as a TOML array or as one comma-separated string
/// (the only form an environment variable has).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub(super) enum ListSetting {
    List(Vec<String>),
    Text(String),
}

impl ListSetting {
    pub(super) fn into_vec(self) -> Vec<String> {
        match self {
            ListSetting::List(v) => v,
            ListSetting::Text(s) => s
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect(),
        }
    }
}

/// `trusted_proxies`: addresses (one host each) or CIDR blocks.
pub(super) fn trusted_proxies(list: Option<ListSetting>) -> anyhow::Result<Vec<ipnet::IpNet>> {
    list.map(ListSetting::into_vec)
        .unwrap_or_default()
        .iter()
        .map(|item| {
            item.parse::<ipnet::IpNet>()
                .or_else(|_| item.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| {
                    anyhow::anyhow!(
                        "setting trusted_proxies: {item:?} is neither an address nor a CIDR block like 10.0.0.0/8"
                    )
                })
        })
        .collect()
}
