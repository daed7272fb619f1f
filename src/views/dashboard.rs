//! The dashboard page: a header with the user and five widget cards.

use maud::{html, Markup};

use super::page;
use crate::user::UserId;

/// The page around already-rendered cards (inline data or placeholders).
pub fn dashboard_page(user: &UserId, cards: &[Markup]) -> Markup {
    page(
        "Dashboard",
        html! {
            header.top {
                h1 { "percache" }
                div.who {
                    span { "Signed in as " strong.username { (user.as_str()) } }
                    form method="post" action="/logout" {
                        button.secondary type="submit" { "Sign out" }
                    }
                }
            }
            main.grid {
                @for card in cards { (card) }
            }
        },
    )
}
