//! The WebSocket subscription endpoint (SPEC §6).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// `GET /v1/database/:db/subscribe`.
pub async fn subscribe() -> Response {
    (StatusCode::NOT_IMPLEMENTED, "WebSocket subscriptions are not implemented yet").into_response()
}
