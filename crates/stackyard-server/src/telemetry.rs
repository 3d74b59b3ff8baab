//! Logging: human-readable text or JSON lines, level from `STACKYARD_LOG`
//! (or `RUST_LOG`), default `info`.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

pub fn init(format: LogFormat) {
    let filter = std::env::var("STACKYARD_LOG")
        .ok()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .map_or_else(|| EnvFilter::new("info"), EnvFilter::new);
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    // Either may fail only when a subscriber is already set (tests): keep that one.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().with_current_span(true).with_span_list(false).try_init(),
    };
}
