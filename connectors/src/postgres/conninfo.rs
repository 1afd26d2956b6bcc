//! Connection strings: `postgres://user:password@host:port/database?option=value`.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// Whether and how to use TLS (libpq's `sslmode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Never.
    Disable,
    /// TLS if the server offers it, else plain (default, as in libpq).
    Prefer,
    /// TLS or fail; the certificate is not checked (unless `sslrootcert` is given).
    Require,
    /// TLS, the certificate chain checked against the roots.
    VerifyCa,
    /// TLS, the chain and the host name checked.
    VerifyFull,
}

/// Where and as whom to connect.
#[derive(Clone, PartialEq, Eq)]
pub struct ConnInfo {
    /// Host name or address.
    pub host: String,
    /// TCP port; default 5432.
    pub port: u16,
    /// Role to log in as; default `postgres`.
    pub user: String,
    /// Password, if the server asks for one.
    pub password: Option<String>,
    /// Database; default the user name.
    pub dbname: String,
    /// How long connecting may take (`connect_timeout` in seconds); default 10s.
    pub connect_timeout: Duration,
    /// TLS (`sslmode`); default `prefer`.
    pub ssl_mode: SslMode,
    /// Root certificates (PEM) to verify the server with (`sslrootcert`);
    /// default the system's.
    pub ssl_root_cert: Option<PathBuf>,
}

impl fmt::Debug for ConnInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl fmt::Display for ConnInfo {
    /// The connection string without its password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "postgres://{}@{}:{}/{}",
            self.user, self.host, self.port, self.dbname
        )
    }
}

impl ConnInfo {
    /// Parses a `postgres://` or `postgresql://` URL with the options
    /// `connect_timeout`, `sslmode`, `sslrootcert`, `application_name`.
    pub fn parse(s: &str) -> Result<ConnInfo, String> {
        let url = url::Url::parse(s).map_err(|e| format!("not a URL ({e})"))?;
        if url.scheme() != "postgres" && url.scheme() != "postgresql" {
            return Err(format!(
                "scheme `{}` is not `postgres://` or `postgresql://`",
                url.scheme()
            ));
        }
        let decode =
            |v: &str| percent_decode(v).ok_or_else(|| format!("bad percent-encoding in `{v}`"));
        let host = match url.host_str() {
            Some(h) if !h.is_empty() => h.trim_start_matches('[').trim_end_matches(']').to_string(),
            _ => "localhost".to_string(),
        };
        let user = if url.username().is_empty() {
            "postgres".to_string()
        } else {
            decode(url.username())?
        };
        let password = url.password().map(decode).transpose()?;
        let path = url.path().trim_start_matches('/');
        let dbname = if path.is_empty() {
            user.clone()
        } else {
            decode(path)?
        };
        let mut info = ConnInfo {
            host,
            port: url.port().unwrap_or(5432),
            user,
            password,
            dbname,
            connect_timeout: Duration::from_secs(10),
            ssl_mode: SslMode::Prefer,
            ssl_root_cert: None,
        };
        for (k, v) in url.query_pairs() {
            match &*k {
                "connect_timeout" => {
                    let secs: u64 = v
                        .parse()
                        .map_err(|_| format!("connect_timeout `{v}` is not a number of seconds"))?;
                    info.connect_timeout = Duration::from_secs(secs.max(1));
                }
                "sslmode" => {
                    info.ssl_mode = match &*v {
                        "disable" => SslMode::Disable,
                        "allow" | "prefer" => SslMode::Prefer,
                        "require" => SslMode::Require,
                        "verify-ca" => SslMode::VerifyCa,
                        "verify-full" => SslMode::VerifyFull,
                        other => {
                            return Err(format!(
                                "sslmode `{other}` is not one of disable, allow, prefer, require, verify-ca, verify-full"
                            ))
                        }
                    };
                }
                "sslrootcert" => info.ssl_root_cert = Some(PathBuf::from(&*v)),
                "application_name" | "options" => {}
                other => return Err(format!("unknown connection option `{other}`")),
            }
        }
        Ok(info)
    }
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes: Vec<u8> = percent_encoding::percent_decode_str(s).collect();
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_full_url_and_hides_the_password() {
        let c = ConnInfo::parse("postgres://app:s%40cret@db.example:6543/orders?connect_timeout=3")
            .unwrap();
        assert_eq!(c.host, "db.example");
        assert_eq!(c.port, 6543);
        assert_eq!(c.user, "app");
        assert_eq!(c.password.as_deref(), Some("s@cret"));
        assert_eq!(c.dbname, "orders");
        assert_eq!(c.connect_timeout, Duration::from_secs(3));
        assert_eq!(c.to_string(), "postgres://app@db.example:6543/orders");
    }

    #[test]
    fn defaults_and_refusals() {
        let c = ConnInfo::parse("postgresql://localhost").unwrap();
        assert_eq!(
            (c.port, c.user.as_str(), c.dbname.as_str()),
            (5432, "postgres", "postgres")
        );
        assert!(ConnInfo::parse("mysql://x").unwrap_err().contains("scheme"));
        assert_eq!(c.ssl_mode, SslMode::Prefer);
        let t = ConnInfo::parse("postgres://x/db?sslmode=verify-full&sslrootcert=/ca.pem").unwrap();
        assert_eq!(t.ssl_mode, SslMode::VerifyFull);
        assert_eq!(t.ssl_root_cert, Some(PathBuf::from("/ca.pem")));
        assert!(ConnInfo::parse("postgres://x/db?sslmode=maybe")
            .unwrap_err()
            .contains("verify-full"));
        assert!(ConnInfo::parse("postgres://x/db?bogus=1")
            .unwrap_err()
            .contains("bogus"));
    }
}
