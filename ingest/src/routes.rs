//! The public routes: which paths ingest serves, the endpoint each decodes as, and a bounded label
//! for metrics (docs/contract.md §3).

use common::event::EventType;

use crate::decode::Endpoint;

/// The public routes, with a bounded label for metrics.
#[derive(Debug, Clone, Copy)]
pub enum Route {
    Batch,
    Track,
    Page,
    Screen,
    Identify,
    Group,
    Alias,
    Beacon,
}

impl Route {
    pub fn of(path: &str) -> Option<Self> {
        match path.trim_end_matches('/') {
            "/v1/batch" | "/v1/import" => Some(Route::Batch),
            "/v1/track" | "/v1/t" => Some(Route::Track),
            "/v1/page" | "/v1/p" => Some(Route::Page),
            "/v1/screen" => Some(Route::Screen),
            "/v1/identify" | "/v1/i" => Some(Route::Identify),
            "/v1/group" | "/v1/g" => Some(Route::Group),
            "/v1/alias" | "/v1/a" => Some(Route::Alias),
            "/v1/beacon" => Some(Route::Beacon),
            _ => None,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Route::Batch => "/v1/batch",
            Route::Track => "/v1/track",
            Route::Page => "/v1/page",
            Route::Screen => "/v1/screen",
            Route::Identify => "/v1/identify",
            Route::Group => "/v1/group",
            Route::Alias => "/v1/alias",
            Route::Beacon => "/v1/beacon",
        }
    }

    pub fn endpoint(self) -> Endpoint {
        match self {
            Route::Batch | Route::Beacon => Endpoint::Batch,
            Route::Track => Endpoint::Single(EventType::Track),
            Route::Page => Endpoint::Single(EventType::Page),
            Route::Screen => Endpoint::Single(EventType::Screen),
            Route::Identify => Endpoint::Single(EventType::Identify),
            Route::Group => Endpoint::Single(EventType::Group),
            Route::Alias => Endpoint::Single(EventType::Alias),
        }
    }
}
