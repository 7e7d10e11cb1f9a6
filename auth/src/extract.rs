//! Finding the token in a request, in COMPAT.md's order: `Authorization: Bearer <t>`,
//! `Authorization: Token <t>`, `x-api-key: <t>`, then the `p` query parameter (InfluxDB 1.x
//! clients, URL-decoded). Two more forms are read where they cannot change which token a
//! request of those forms presents:
//!
//! - an `Authorization` value without a scheme is the token itself, as Arc reads it; it is
//!   looked for with the other `Authorization` forms;
//! - HTTP Basic credentials, last: the password is the token and the user name is ignored, as
//!   InfluxDB's 1.x compatibility API does. InfluxDB 1.x clients (Telegraf's `influxdb` output,
//!   Grafana's InfluxQL data source, the `influxdb` Python client) send a password only so.
//!
//! The first source that carries a non-empty token wins; later sources are not consulted even
//! if the first token turns out invalid, so a request cannot try two tokens at once.

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::secret::TokenSecret;

/// Header carrying a bare token.
pub const API_KEY_HEADER: &str = "x-api-key";

/// Query parameter carrying a token (InfluxDB 1.x `?p=`).
pub const QUERY_TOKEN_PARAMETER: &str = "p";

/// Returns the token a request presents, or `None` if it presents none. `query` is the raw
/// query string (without `?`).
pub fn extract_token(headers: &HeaderMap, query: Option<&str>) -> Option<TokenSecret> {
    authorization_token(headers)
        .or_else(|| api_key_token(headers))
        .or_else(|| query.and_then(query_token))
        .or_else(|| basic_password(headers))
        .map(TokenSecret::new)
}

fn authorization_token(headers: &HeaderMap) -> Option<String> {
    // Several Authorization headers: take the first that carries a token in a form we know.
    headers.get_all(AUTHORIZATION).iter().find_map(|value| {
        let value = value.to_str().ok()?.trim();
        match value.split_once(' ') {
            Some((scheme, token)) => {
                let known =
                    scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("token");
                non_empty(token.trim()).filter(|_| known)
            }
            // No scheme: the value is the token (Arc's reading), unless it is a bare scheme.
            None => non_empty(value).filter(|value| {
                !["bearer", "token", "basic"]
                    .iter()
                    .any(|scheme| value.eq_ignore_ascii_case(scheme))
            }),
        }
    })
}

/// The password of `Authorization: Basic base64(user:password)`.
fn basic_password(headers: &HeaderMap) -> Option<String> {
    headers.get_all(AUTHORIZATION).iter().find_map(|value| {
        let (scheme, encoded) = value.to_str().ok()?.trim().split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("basic") {
            return None;
        }
        let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
        let (_user, password) = decoded.split_once(':')?;
        non_empty(password)
    })
}

fn api_key_token(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(API_KEY_HEADER)?.to_str().ok()?;
    non_empty(value.trim())
}

fn query_token(query: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes())
        .find(|(key, _)| key == QUERY_TOKEN_PARAMETER)
        .and_then(|(_, value)| non_empty(&value))
}

fn non_empty(token: &str) -> Option<String> {
    (!token.is_empty()).then(|| token.to_string())
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).expect("test header"));
        }
        map
    }

    fn found(headers: &HeaderMap, query: Option<&str>) -> Option<String> {
        extract_token(headers, query).map(|secret| secret.expose_secret().to_string())
    }

    #[test]
    fn test_should_read_each_source() {
        let cases = [
            (headers(&[("authorization", "Bearer arc_a")]), None, "arc_a"),
            (headers(&[("authorization", "bearer arc_a")]), None, "arc_a"),
            (headers(&[("authorization", "Token arc_b")]), None, "arc_b"),
            (headers(&[("x-api-key", "arc_c")]), None, "arc_c"),
            (HeaderMap::new(), Some("db=x&p=arc_d"), "arc_d"),
            (HeaderMap::new(), Some("p=arc%2Bd%20e"), "arc+d e"),
            (headers(&[("authorization", "arc_e")]), None, "arc_e"),
            // base64("telegraf:arc_f")
            (
                headers(&[("authorization", "Basic dGVsZWdyYWY6YXJjX2Y=")]),
                None,
                "arc_f",
            ),
            // base64(":arc:g"): no user name, a colon in the password
            (
                headers(&[("authorization", "basic OmFyYzpn")]),
                None,
                "arc:g",
            ),
        ];
        for (headers, query, expected) in cases {
            assert_eq!(found(&headers, query).as_deref(), Some(expected));
        }
    }

    #[test]
    fn test_should_follow_compat_order() {
        let all = headers(&[("x-api-key", "arc_key"), ("authorization", "Token arc_tok")]);
        assert_eq!(found(&all, Some("p=arc_p")).as_deref(), Some("arc_tok"));
        let key_and_query = headers(&[("x-api-key", "arc_key")]);
        assert_eq!(
            found(&key_and_query, Some("p=arc_p")).as_deref(),
            Some("arc_key")
        );
        // An Authorization header of another scheme does not hide x-api-key.
        let basic = headers(&[
            ("authorization", "Basic dXNlcjpwYXNz"),
            ("x-api-key", "arc_k"),
        ]);
        assert_eq!(found(&basic, None).as_deref(), Some("arc_k"));
        // Basic credentials come last: they never hide a form COMPAT.md names.
        let basic_and_query = headers(&[("authorization", "Basic dGVsZWdyYWY6YXJjX2Y=")]);
        assert_eq!(
            found(&basic_and_query, Some("u=x&p=arc_p")).as_deref(),
            Some("arc_p")
        );
    }

    #[test]
    fn test_should_find_nothing_in_empty_or_foreign_sources() {
        assert_eq!(found(&HeaderMap::new(), None), None);
        assert_eq!(found(&HeaderMap::new(), Some("db=x&p=")), None);
        assert_eq!(found(&headers(&[("authorization", "Bearer ")]), None), None);
        assert_eq!(found(&headers(&[("authorization", "Bearer")]), None), None);
        // Not base64, no colon (base64("user")), an empty password (base64("user:")).
        for value in ["Basic abc!", "Basic dXNlcg==", "Basic dXNlcjo=", "Basic "] {
            assert_eq!(
                found(&headers(&[("authorization", value)]), None),
                None,
                "{value}"
            );
        }
        assert_eq!(
            found(&headers(&[("authorization", "Negotiate abc")]), None),
            None
        );
        assert_eq!(found(&headers(&[("x-api-key", "  ")]), None), None);
        assert_eq!(found(&HeaderMap::new(), Some("pp=arc_x&q=p")), None);
    }
}
