//! The `percache` binary: parse flags, set up logging, run the server.

use clap::Parser;

// The allocator (issue 26): chosen by measurement, see benches/burst.sh.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
#[cfg(all(feature = "jemalloc", not(feature = "mimalloc")))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
/// jemalloc's options (issue 26), read when it starts: a background thread
/// purges the pages a burst freed while the server idles after it (without
/// one, freed pages are purged only when later allocations call into
/// jemalloc, so an idle server kept them), and a freed page is purged after
/// 1 s unused instead of 10 s (benches/burst.sh reads RSS 15 s after the
/// drain). `_RJEM_MALLOC_CONF` in the environment still overrides them.
#[cfg(all(feature = "jemalloc", not(feature = "mimalloc")))]
#[allow(non_upper_case_globals)]
#[export_name = "_rjem_malloc_conf"]
pub static malloc_conf: &[u8] = b"background_thread:true,dirty_decay_ms:1000\0";
use percache::config::{LogFormat, Settings};
use percache::{startup::Application, telemetry};

fn main() -> anyhow::Result<()> {
    // `percache healthcheck [URL]`: the container's probe (no curl in the image).
    let mut args = std::env::args().skip(1);
    if args.next().as_deref() == Some("healthcheck") {
        let url = args
            .next()
            .unwrap_or_else(|| percache::probe::DEFAULT_URL.to_owned());
        match percache::probe::probe(&url) {
            Ok(()) => std::process::exit(0),
            Err(why) => {
                eprintln!("unhealthy: {why}");
                std::process::exit(1);
            }
        }
    }
    serve()
}

#[actix_web::main]
async fn serve() -> anyhow::Result<()> {
    let settings = Settings::parse();
    telemetry::init(settings.log_format);
    let json = settings.log_format == LogFormat::Json;
    let app = Application::build(settings).await?;
    let url = format!("http://{}", app.address());
    if json {
        // Machines read JSON logs: keep every line JSON.
        tracing::info!(%url, "percache listening");
    } else {
        println!("percache listening on {url} (open {url}/login)");
    }
    app.run_until_stopped().await?;
    Ok(())
}
