//! The `percache` binary: parse flags, set up logging, run the server.

use clap::Parser;

// The allocator (issue 26): chosen by measurement, see benches/burst.sh.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
#[cfg(all(feature = "jemalloc", not(feature = "mimalloc")))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
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
