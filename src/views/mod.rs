//! Server-rendered HTML (maud). Views are plain functions returning
//! [`maud::Markup`], composed from partials; maud escapes every interpolated
//! string, so usernames and upstream data are always shown as text.

mod admin;
mod charts;
mod dashboard;
mod kinds;
mod layout;
mod login;
pub mod prerender;
mod widget;

pub use admin::{admin_login_page, admin_page};
pub use dashboard::{dashboard_page, live_poller, live_poller_later};
pub use layout::{page, page_with_head};
pub use login::{login_page, not_signed_in_page};
pub use widget::{error_fragment, live_card, loading_card, widget_card, widget_card_ref, DashboardCard};
