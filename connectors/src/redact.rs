//! Secrets kept out of logs, errors and dead-letter reasons: a URL is
//! shown with its password (or a bare token) and its secret-looking query
//! values replaced by `***`.

/// Query keys whose values are secrets.
const SECRET_KEYS: &[&str] = &[
    "password",
    "passwd",
    "pass",
    "pwd",
    "token",
    "secret",
    "key",
    "apikey",
    "api_key",
    "access_token",
    "auth",
    "signature",
    "sig",
];

/// `url` (or several, separated by commas) fit to show: `user:pass@` →
/// `user:***@`, `token@` → `***@`, `?token=abc` → `?token=***`.
pub fn url(url: &str) -> String {
    url.split(',').map(one).collect::<Vec<_>>().join(",")
}

fn one(url: &str) -> String {
    let (scheme, rest) = match url.find("://") {
        Some(i) => url.split_at(i + 3),
        None => ("", url),
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rfind('@') {
        Some(at) => {
            let (userinfo, host) = authority.split_at(at);
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{user}:***{host}"),
                None => format!("***{host}"),
            }
        }
        None => authority.to_string(),
    };
    format!("{scheme}{authority}{}", query(tail))
}

/// The path, with secret query values masked.
fn query(tail: &str) -> String {
    let Some(q) = tail.find('?') else {
        return tail.to_string();
    };
    let (path, rest) = tail.split_at(q + 1);
    let (params, fragment) = match rest.find('#') {
        Some(h) => rest.split_at(h),
        None => (rest, ""),
    };
    let params: Vec<String> = params
        .split('&')
        .map(|p| match p.split_once('=') {
            Some((k, _)) if SECRET_KEYS.contains(&k.to_ascii_lowercase().as_str()) => {
                format!("{k}=***")
            }
            _ => p.to_string(),
        })
        .collect();
    format!("{path}{}{fragment}", params.join("&"))
}

#[cfg(test)]
mod tests {
    use super::url;

    #[test]
    fn passwords_tokens_and_secret_query_values_are_masked() {
        assert_eq!(
            url("nats://alice:s3cret@host:4222"),
            "nats://alice:***@host:4222"
        );
        assert_eq!(url("nats://tok3n@host:4222"), "nats://***@host:4222");
        assert_eq!(
            url("nats://a:b@h1:4222, nats://h2:4222"),
            "nats://a:***@h1:4222, nats://h2:4222"
        );
        assert_eq!(
            url("https://u:p@api.example/v1/x?Token=abc&q=1#f"),
            "https://u:***@api.example/v1/x?Token=***&q=1#f"
        );
        assert_eq!(url("http://127.0.0.1:8080/in"), "http://127.0.0.1:8080/in");
        assert_eq!(url("host:9092"), "host:9092");
        // an @ in the path is not userinfo
        assert_eq!(url("http://h/a@b"), "http://h/a@b");
    }
}
