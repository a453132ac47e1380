//! The meshrelay node: settings, the client API (HTTP and WebSocket), live
//! fan-out, the CLI, and the wiring of the crates below it.

pub mod app;
pub mod blobs;
pub mod cli;
pub mod cluster;
pub mod data_dir;
pub mod error;
pub mod http;
pub mod hub;
pub mod ingest;
pub mod jobs;
pub mod limits;
pub mod metrics;
pub mod node_key;
pub mod settings;
pub mod state;
pub mod tls;

pub use app::Application;
pub use settings::Settings;
