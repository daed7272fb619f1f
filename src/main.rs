//! The `percache` binary: parse flags, set up logging, run the server.

use clap::Parser;
use percache::{config::Settings, startup::Application, telemetry};

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::parse();
    telemetry::init(settings.log_format);
    let app = Application::build(settings).await?;
    println!(
        "percache listening on http://{addr} (open http://{addr}/login)",
        addr = app.address()
    );
    app.run_until_stopped().await?;
    Ok(())
}
