//! The `percache` binary: parse flags, set up logging, run the server.

use clap::Parser;
use percache::config::{LogFormat, Settings};
use percache::{startup::Application, telemetry};

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
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
