//! The HTML document shell shared by every page.

use maud::{html, Markup, Render, DOCTYPE};

/// htmx's vendored version; part of the asset URL so browsers can cache it forever.
pub const HTMX_VERSION: &str = "2.0.4";

/// A full page. htmx is configured through a meta tag (no inline script) so
/// the Content-Security-Policy can forbid inline scripts and styles.
pub fn page(title: &str, body: Markup) -> Markup {
    page_with_head(title, None, body)
}

/// A full page with extra elements in `<head>`. The body renders straight
/// into the page (a `Markup`, or a view that writes itself).
pub fn page_with_head(title: &str, head_extra: Option<Markup>, body: impl Render) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="htmx-config" content=r#"{"includeIndicatorStyles":false,"allowEval":false,"allowScriptTags":false}"#;
                title { (title) " · percache" }
                // No favicon request (and no 404 in the console).
                link rel="icon" href="data:,";
                link rel="stylesheet" href=(concat!("/assets/app.css?v=", env!("CARGO_PKG_VERSION")));
                script src={ "/assets/htmx.min.js?v=" (HTMX_VERSION) } defer {}
                script src=(concat!("/assets/ages.js?v=", env!("CARGO_PKG_VERSION"))) defer {}
                script src=(concat!("/assets/leaving.js?v=", env!("CARGO_PKG_VERSION"))) defer {}
                script src=(concat!("/assets/live.js?v=", env!("CARGO_PKG_VERSION"))) defer {}
                @if let Some(extra) = head_extra { (extra) }
            }
            body { (body) }
        }
    }
}
