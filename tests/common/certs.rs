//! Certificates for TLS tests, made with the openssl command: a CA, a
//! server certificate it signs for 127.0.0.1 and localhost, and a second,
//! unrelated CA (`other.crt`) that must not be trusted.

use std::path::Path;

/// Writes `ca.crt`, `server.crt`, `server.key` and `other.crt` into `dir`.
pub fn make(dir: &Path) {
    let script = r#"set -e
openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 -subj "/CN=weir test CA" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj "/CN=127.0.0.1" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' > san.ext
openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt -days 2 -extfile san.ext 2>/dev/null
openssl req -x509 -newkey rsa:2048 -nodes -keyout other.key -out other.crt -days 2 -subj "/CN=another CA" 2>/dev/null
chmod 600 server.key
"#;
    let out = std::process::Command::new("bash")
        .args(["-c", script])
        .current_dir(dir)
        .output()
        .expect("bash runs");
    assert!(
        out.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
