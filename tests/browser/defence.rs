//! A real browser on another site: its form posts to percache are refused
//! (login CSRF), while the same browser on percache's own page signs in.

use anyhow::{ensure, Context as _};
use fantoccini::Locator;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::driver::run;
use crate::page::dashboard_app;

/// A bare HTTP server on 127.0.0.1 that answers every request with `html`
/// (the attacker's site). Returns its port; it runs until the test ends.
async fn serve_page(html: String) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let html = html.clone();
            tokio::spawn(async move {
                // Read the request head; the page is the same for every path.
                let mut head = Vec::new();
                let mut buf = [0u8; 2048];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let response = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{html}",
                    html.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    port
}

#[tokio::test]
async fn a_form_on_another_site_cannot_sign_the_browser_in() {
    run(
        "a_form_on_another_site_cannot_sign_the_browser_in",
        |tab| async move {
            // Arrange: percache on 127.0.0.1, the attacker's page on `localhost`
            // (another host name: another site), with a form that signs in as mallory.
            let app = dashboard_app().await;
            let page = format!(
                r#"<!doctype html><html><head><title>Win a prize</title></head><body>
               <form method="post" action="{}">
                 <input name="username" value="mallory">
                 <button id="go" type="submit">Claim</button>
               </form></body></html>"#,
                app.url("/login")
            );
            let attacker = serve_page(page).await;
            tab.client
                .goto(&format!("http://localhost:{attacker}/"))
                .await
                .context("opening the attacker's page")?;

            // Act: the victim clicks the attacker's button.
            tab.click("#go").await?;

            // Assert: percache refused it, said why, and nobody is signed in.
            let refusal = tab
                .client
                .wait()
                .for_element(Locator::Css(r#"[role="alert"]"#))
                .await
                .context("the refusal message")?
                .text()
                .await?;
            ensure!(refusal.contains("was refused"), "the message says why: {refusal}");
            // The 403 itself is in the console as a failed load: expected here.
            let console = tab.console().await;
            let failed: Vec<&String> = console
                .iter()
                .filter(|l| l.starts_with("SEVERE") && !l.contains("/favicon.ico"))
                .collect();
            ensure!(
                !failed.is_empty() && failed.iter().all(|l| l.contains("/login") && l.contains("403")),
                "only the refused post failed, with 403: {console:#?}"
            );
            ensure!(app.mock.total_calls() == 0, "no prewarm for mallory");
            tab.client.goto(&app.url("/dashboard")).await?;
            tab.wait_for_path("/login").await?;

            // The same browser signs in through percache's own form.
            tab.sign_in(&app, "alice").await?;
            tab.screenshot("cross-site-refused-then-signed-in").await?;
            Ok(())
        },
    )
    .await;
}
