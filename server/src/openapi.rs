//! `GET /openapi.json`: the OpenAPI 3 description of the routes, generated from the handlers'
//! annotations and the wire types (`api.rs`, `error.rs`) by utoipa.

use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "e5embed-server",
        description = "Text embeddings over HTTP: OpenAI's /v1/embeddings and TEI's /embed."
    ),
    paths(
        crate::embed,
        crate::openai_embeddings,
        crate::health,
        crate::info,
        crate::metrics_route,
        crate::openapi_route
    ),
    components(schemas(
        crate::api::Input,
        crate::api::EmbedRequest,
        crate::api::OpenAiRequest,
        crate::api::OpenAiResponse,
        crate::api::InfoResponse,
        crate::api::HealthResponse,
        crate::error::TeiErrorBody,
        crate::error::OpenAiErrorBody,
        crate::error::ErrorType
    ))
)]
struct ApiDoc;

/// The document served on `/openapi.json`.
pub fn spec() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}
