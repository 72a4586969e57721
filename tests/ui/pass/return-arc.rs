//! An `Arc<T>` is cached without serde's `rc` feature, in every shape, by
//! every attribute and companion.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tiercache::{cache_aside, write_through};

/// Neither `Clone` nor `Serialize` for `Arc` is needed.
#[derive(Serialize, Deserialize)]
struct Report {
    rows: Vec<u64>,
}

#[cache_aside(prefix = "report", ttl = "5m")]
async fn report(id: u64) -> Arc<Report> {
    Arc::new(Report { rows: vec![id] })
}

#[cache_aside(prefix = "maybe-report", ttl = "5m", stale = "1m")]
async fn maybe_report(id: u64) -> Option<Arc<Report>> {
    Some(Arc::new(Report { rows: vec![id] }))
}

#[cache_aside(prefix = "fallible-report", ttl = "5m")]
async fn fallible_report(id: u64) -> Result<std::sync::Arc<Report>, String> {
    Ok(Arc::new(Report { rows: vec![id] }))
}

#[write_through(report(id))]
async fn save_report(id: u64) -> Arc<Report> {
    Arc::new(Report { rows: vec![id, id] })
}

fn main() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let _ = report(1).await;
        let _ = maybe_report(1).await;
        let _ = fallible_report(1).await;
        let _ = save_report(1).await;
        let _: Option<Arc<Report>> = report_peek(1).await;
        let _ = report_set(1, &Arc::new(Report { rows: vec![] })).await;
    });
}
