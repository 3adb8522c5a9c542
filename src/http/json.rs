//! `JsonObject<T>`: the extractor for every JSON request body.
//!
//! serde reads a struct from a JSON array as readily as from an object
//! (`["math101", "Limits"]` fills the fields in order), so `Json<T>` alone
//! takes bodies the API never documented. Every JSON body here is an
//! object; anything else, and any body serde refuses, is a 400 that says
//! what to send.

use axum::extract::{FromRequest, Request};
use axum::Json;
use serde::de::DeserializeOwned;

use super::ApiError;

pub struct JsonObject<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonObject<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let Json(value) = Json::<serde_json::Value>::from_request(request, state)
            .await
            .map_err(|e| ApiError::BadRequest(format!("send a JSON object: {}", e.body_text())))?;
        if !value.is_object() {
            return Err(ApiError::BadRequest("send a JSON object (`{}` when every field has a default)".into()));
        }
        serde_json::from_value(value)
            .map(JsonObject)
            .map_err(|e| ApiError::BadRequest(format!("in the JSON body: {e}")))
    }
}
