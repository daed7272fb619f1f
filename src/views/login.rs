//! The sign-in page.

use maud::{html, Markup};

use super::page;

/// The sign-in form, with an error message and the rejected value when the
/// previous attempt was refused.
pub fn login_page(error: Option<&str>, value: &str) -> Markup {
    page(
        "Sign in",
        html! {
            main.login {
                h1 { "percache" }
                p.lede { "Sign in with just a username to see your dashboard." }
                form method="post" action="/login" {
                    label for="username" { "Username" }
                    input #username name="username" type="text" value=(value)
                        autocomplete="username" autofocus required
                        aria-invalid=[error.map(|_| "true")]
                        aria-describedby=[error.map(|_| "login-error")];
                    @if let Some(message) = error {
                        p #login-error.error role="alert" { (message) }
                    }
                    button type="submit" { "Sign in" }
                }
            }
        },
    )
}

/// Behind an identity proxy (`--user-header`), a request that does not
/// carry the proxy's word: a plain page saying so (401).
pub fn not_signed_in_page() -> Markup {
    page(
        "Not signed in",
        html! {
            main.login {
                h1 { "percache" }
                p.lede { "You are not signed in." }
                p { "This server takes who you are from the sign-in service in front of it, "
                    "and this request did not come through it. Open the dashboard through "
                    "your organisation's sign-in." }
            }
        },
    )
}
