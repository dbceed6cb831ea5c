//! The public routes: which paths ingest serves, the endpoint each decodes as, the methods each
//! answers, and a bounded label for metrics (docs/contract.md §4).

use common::event::EventType;

use crate::decode::Endpoint;

/// The public routes, with a bounded label for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Batch,
    Track,
    Page,
    Screen,
    Identify,
    Group,
    Alias,
    Beacon,
    /// `/xAPI/statements`: xAPI statements in, as learning events (`xapi`).
    XapiStatements,
    /// `/xAPI/about`: the xAPI versions this LRS speaks.
    XapiAbout,
}

impl Route {
    pub fn of(path: &str) -> Option<Self> {
        let path = path.trim_end_matches('/');
        Some(match path {
            "/v1/batch" | "/v1/import" => Route::Batch,
            "/v1/track" | "/v1/t" => Route::Track,
            "/v1/page" | "/v1/p" => Route::Page,
            "/v1/screen" => Route::Screen,
            "/v1/identify" | "/v1/i" => Route::Identify,
            "/v1/group" | "/v1/g" => Route::Group,
            "/v1/alias" | "/v1/a" => Route::Alias,
            "/v1/beacon" => Route::Beacon,
            _ => {
                // LRS clients are configured with a base URL ending in `xAPI`, spelt as the
                // operator typed it: that segment is read in any case.
                let (prefix, resource) = path.split_at_checked(6)?;
                if !prefix.eq_ignore_ascii_case("/xapi/") {
                    return None;
                }
                match resource {
                    "statements" => Route::XapiStatements,
                    "about" => Route::XapiAbout,
                    _ => return None,
                }
            }
        })
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
            Route::XapiStatements => "/xAPI/statements",
            Route::XapiAbout => "/xAPI/about",
        }
    }

    /// The methods the route answers besides `OPTIONS` (the preflight's and the 405's list).
    pub fn methods(self) -> &'static str {
        match self {
            Route::XapiStatements => "POST, PUT",
            Route::XapiAbout => "GET",
            _ => "POST",
        }
    }

    /// Whether the route speaks xAPI (its answers carry `X-Experience-API-Version`).
    pub fn is_xapi(self) -> bool {
        matches!(self, Route::XapiStatements | Route::XapiAbout)
    }

    /// The Segment endpoint the route decodes as; `None` for the xAPI routes.
    pub fn endpoint(self) -> Option<Endpoint> {
        Some(match self {
            Route::Batch | Route::Beacon => Endpoint::Batch,
            Route::Track => Endpoint::Single(EventType::Track),
            Route::Page => Endpoint::Single(EventType::Page),
            Route::Screen => Endpoint::Single(EventType::Screen),
            Route::Identify => Endpoint::Single(EventType::Identify),
            Route::Group => Endpoint::Single(EventType::Group),
            Route::Alias => Endpoint::Single(EventType::Alias),
            Route::XapiStatements | Route::XapiAbout => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::Route;

    #[test]
    fn the_xapi_segment_is_read_in_any_case_and_a_trailing_slash_ignored() {
        for path in [
            "/xAPI/statements",
            "/xapi/statements",
            "/XAPI/statements/",
            "/xApI/statements",
        ] {
            assert_eq!(Route::of(path), Some(Route::XapiStatements), "{path}");
        }
        assert_eq!(Route::of("/xAPI/about/"), Some(Route::XapiAbout));
        for path in [
            "/xAPI/Statements",
            "/xAPI",
            "/xAPI/",
            "/v1/xAPI/statements",
            "/xAPI/activities",
            "/xap",
        ] {
            assert_eq!(Route::of(path), None, "{path}");
        }
        assert_eq!(Route::of("/v1/batch/"), Some(Route::Batch));
    }
}
