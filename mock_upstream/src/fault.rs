//! Fault injection: how the mock answers calls for one widget.

use serde::{Deserialize, Serialize};

/// How the mock answers calls for one widget.
///
/// Set at runtime with [`crate::MockUpstream::set_fault`] or over HTTP with `POST /faults`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize, Default)]
pub enum Fault {
    /// Normal behaviour: wait the widget's delay, then answer 200 with JSON data.
    #[default]
    Ok,
    /// Answer at once with this HTTP status and a JSON error body.
    Error(u16),
    /// Never answer (the handler sleeps for an hour).
    Hang,
    /// Answer at once `429 Too Many Requests` with `Retry-After: <secs>`.
    Limited(u64),
}

/// Body of `POST /faults`: `{"widget":4,"mode":"error","status":503}`.
#[derive(Debug, Deserialize)]
pub(crate) struct FaultRequest {
    pub widget: u8,
    pub mode: String,
    #[serde(default)]
    pub status: Option<u16>,
    #[serde(default, rename = "retryAfter")]
    pub retry_after: Option<u64>,
}

impl FaultRequest {
    /// Validates the request and returns the widget and its new fault, or an error message.
    pub(crate) fn into_fault(self) -> Result<(u8, Fault), String> {
        if !crate::valid_widget(self.widget) {
            return Err(format!("unknown widget {}", self.widget));
        }
        let fault = match self.mode.to_ascii_lowercase().as_str() {
            "ok" => Fault::Ok,
            "hang" => Fault::Hang,
            "error" => {
                let status = self.status.unwrap_or(500);
                if !(400..=599).contains(&status) {
                    return Err(format!("status must be 400..=599, got {status}"));
                }
                Fault::Error(status)
            }
            "limited" => Fault::Limited(self.retry_after.unwrap_or(1)),
            other => {
                return Err(format!(
                    "unknown mode {other:?} (expected ok, error, hang or limited)"
                ))
            }
        };
        Ok((self.widget, fault))
    }
}
