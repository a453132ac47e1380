//! The test databases of the storage tests.
#![allow(dead_code)]

use meshrelay_store::Store;

/// A fresh, empty database of one backend, removed again after the test.
pub struct TestDb {
    pub store: Store,
    /// The database URL `store` was opened with (a second process's).
    pub url: String,
    _dir: Option<tempfile::TempDir>,
    pg_schema: Option<String>,
}

pub fn pg_url() -> String {
    std::env::var("MESHRELAY_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string())
}

impl TestDb {
    pub async fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let store = Store::connect(&url).await.unwrap();
        store.migrate().await.unwrap();
        Self {
            store,
            url,
            _dir: Some(dir),
            pg_schema: None,
        }
    }

    pub async fn postgres() -> Self {
        let schema = format!("meshrelay_test_{}", hex::encode(rand::random::<[u8; 6]>()));
        let admin = Store::connect(&pg_url()).await.unwrap_or_else(|e| {
            panic!(
                "PostgreSQL at {} is needed for the store suite: {e:?}",
                pg_url()
            )
        });
        admin
            .execute_raw(&format!("CREATE SCHEMA {schema}"))
            .await
            .unwrap();
        admin.close().await;
        let sep = if pg_url().contains('?') { '&' } else { '?' };
        let url = format!("{}{sep}options=-c%20search_path%3D{schema}", pg_url());
        let store = Store::connect(&url).await.unwrap();
        store.migrate().await.unwrap();
        Self {
            store,
            url,
            _dir: None,
            pg_schema: Some(schema),
        }
    }

    pub async fn finish(self) {
        self.store.close().await;
        if let Some(schema) = self.pg_schema {
            let admin = Store::connect(&pg_url()).await.unwrap();
            admin
                .execute_raw(&format!("DROP SCHEMA {schema} CASCADE"))
                .await
                .unwrap();
            admin.close().await;
        }
    }
}
