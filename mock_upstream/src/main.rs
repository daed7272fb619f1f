//! `mock-upstream`: runs the fake, slow, per-user widgets API until Ctrl-C (or SIGTERM).

use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use mock_upstream::{MockConfig, MockUpstream};

/// A fake, slow, per-user widgets API for percache's tests and demos.
#[derive(Debug, Parser)]
#[command(name = "mock-upstream", version, about)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "MOCK_BIND", default_value = "127.0.0.1:8787")]
    bind: String,

    /// Per-widget delays in milliseconds: exactly 5 comma-separated numbers.
    #[arg(
        long,
        env = "MOCK_DELAYS_MS",
        default_value = "1000,3000,15000,6000,1000",
        value_parser = parse_delays
    )]
    delays_ms: Delays,

    /// Random spread applied to each delay, in percent.
    #[arg(long, env = "MOCK_JITTER_PCT", default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=100))]
    jitter_pct: u32,

    /// Keep each (user, widget)'s body until `POST /bump`, with `ETag` and
    /// `Last-Modified`; a matching `If-None-Match` gets `304 Not Modified`.
    #[arg(long, env = "MOCK_ETAGS")]
    etags: bool,
}

/// Five per-widget delays, in milliseconds.
#[derive(Clone, Copy, Debug)]
struct Delays([u64; 5]);

fn parse_delays(s: &str) -> Result<Delays, String> {
    let parts: Vec<&str> = s.split(',').map(str::trim).collect();
    if parts.len() != 5 {
        return Err(format!("expected 5 comma-separated delays, got {}", parts.len()));
    }
    let mut out = [0u64; 5];
    for (slot, part) in out.iter_mut().zip(&parts) {
        *slot = part
            .parse()
            .map_err(|_| format!("not a number of milliseconds: {part:?}"))?;
    }
    Ok(Delays(out))
}

/// Resolves on Ctrl-C, or on SIGTERM on Unix (e.g. `docker stop`).
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut config = MockConfig::with_delays_ms(args.delays_ms.0);
    config.jitter_pct = args.jitter_pct;
    config.etags = args.etags;
    let delays: Vec<String> = config
        .delays
        .iter()
        .map(|d| format!("{}ms", d.as_millis()))
        .collect();

    let mock = MockUpstream::start(&args.bind, config)
        .await
        .with_context(|| format!("cannot listen on {}", args.bind))?;
    println!("mock-upstream listening on {}", mock.url());
    println!(
        "delays per widget: {} (jitter {}%)",
        delays.join(", "),
        args.jitter_pct
    );

    shutdown_signal().await;
    println!("mock-upstream shutting down");
    tokio::time::timeout(Duration::from_secs(5), mock.stop())
        .await
        .ok();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_parse() {
        assert_eq!(parse_delays("1,2,3,4,5").map(|d| d.0), Ok([1, 2, 3, 4, 5]));
        assert!(parse_delays("1,2,3,4").is_err());
        assert!(parse_delays("1,2,x,4,5").is_err());
    }

    #[test]
    fn args_defaults() {
        let a = Args::try_parse_from(["mock-upstream"]).map_err(|e| e.to_string());
        let a = a.as_ref().map(|a| (a.bind.as_str(), a.delays_ms.0, a.jitter_pct));
        assert_eq!(a, Ok(("127.0.0.1:8787", [1000, 3000, 15000, 6000, 1000], 0)));
    }
}
