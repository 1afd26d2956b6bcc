//! Subject templates of the NATS sinks: literal text with `{{key}}` (the
//! event's key) and `{{field}}` / `{{a.b}}` (a field of the JSON value).

use bytes::Bytes;
use weir_engine::{Error, Event, Result};

/// A parsed subject template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SubjectTemplate {
    parts: Vec<Part>,
    /// The subject itself when the template has no placeholder: handed out
    /// by reference count, so a fixed subject costs no allocation per event.
    fixed: Option<async_nats::Subject>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Key,
    Field(Vec<String>),
}

impl SubjectTemplate {
    /// Parses `template`; an error says what is wrong.
    pub(crate) fn parse(template: &str) -> std::result::Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = template;
        while let Some(start) = rest.find("{{") {
            if start > 0 {
                parts.push(Part::Text(rest[..start].to_string()));
            }
            let after = &rest[start + 2..];
            let end = after
                .find("}}")
                .ok_or_else(|| format!("unclosed `{{{{` in subject template {template:?}"))?;
            let name = after[..end].trim();
            parts.push(match name {
                "key" => Part::Key,
                "" => {
                    return Err(format!(
                        "empty placeholder in subject template {template:?}"
                    ))
                }
                field => Part::Field(field.split('.').map(str::to_string).collect()),
            });
            rest = &after[end + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        if parts.is_empty() {
            return Err("the subject must not be empty".into());
        }
        let fixed = match parts.as_slice() {
            [Part::Text(t)] => Some(async_nats::Subject::from(t.clone())),
            _ => None,
        };
        Ok(SubjectTemplate { parts, fixed })
    }

    /// Whether the subject is the same for every event.
    pub(crate) fn fixed(&self) -> Option<&str> {
        self.fixed.as_deref()
    }

    /// The subject for `event`: the fixed one, or rendered through `buf`.
    pub(crate) fn subject_for(
        &self,
        event: &Event,
        buf: &mut String,
    ) -> Result<async_nats::Subject> {
        if let Some(fixed) = &self.fixed {
            return Ok(fixed.clone());
        }
        self.render(event, buf)?;
        Ok(async_nats::Subject::from(buf.as_str()))
    }

    /// The subject for `event`, written into `out`. Fails (a poison event:
    /// dead-lettered) when a placeholder has nothing to fill it.
    pub(crate) fn render(&self, event: &Event, out: &mut String) -> Result<()> {
        out.clear();
        let mut json: Option<serde_json::Value> = None;
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Key => {
                    let key = event.key.as_ref().ok_or_else(|| {
                        Error::user("the subject uses {{key}} but the event has no key")
                    })?;
                    out.push_str(&String::from_utf8_lossy(key));
                }
                Part::Field(path) => {
                    if json.is_none() {
                        json = Some(serde_json::from_slice(&event.value).map_err(|e| {
                            Error::user(format!(
                                "the subject uses a field but the value is not JSON: {e}"
                            ))
                        })?);
                    }
                    let mut v = json.as_ref().expect("parsed above");
                    for p in path {
                        v = v.get(p).ok_or_else(|| {
                            Error::user(format!(
                                "the subject uses `{}`, which the event lacks",
                                path.join(".")
                            ))
                        })?;
                    }
                    match v {
                        serde_json::Value::String(s) => out.push_str(s),
                        serde_json::Value::Number(n) => out.push_str(&n.to_string()),
                        serde_json::Value::Bool(b) => {
                            out.push_str(if *b { "true" } else { "false" })
                        }
                        _ => {
                            return Err(Error::user(format!(
                                "the subject field `{}` is not a string, number or boolean",
                                path.join(".")
                            )))
                        }
                    }
                }
            }
        }
        if out.is_empty() || out.contains(char::is_whitespace) {
            return Err(Error::user(format!(
                "rendered subject {out:?} is not a valid subject"
            )));
        }
        Ok(())
    }
}

/// An event's headers as a NATS header map (`None` when it has none).
pub(crate) fn headers(event: &Event) -> Option<async_nats::HeaderMap> {
    if event.headers.is_empty() {
        return None;
    }
    let mut map = async_nats::HeaderMap::new();
    for (k, v) in &event.headers {
        map.append(
            String::from_utf8_lossy(k).as_ref(),
            String::from_utf8_lossy(v).as_ref(),
        );
    }
    Some(map)
}

/// A NATS message's headers as event headers.
pub(crate) fn event_headers(map: Option<&async_nats::HeaderMap>) -> Vec<(Bytes, Bytes)> {
    let Some(map) = map else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (name, values) in map.iter() {
        for v in values {
            out.push((
                Bytes::copy_from_slice(name.to_string().as_bytes()),
                Bytes::copy_from_slice(v.as_str().as_bytes()),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_text_key_and_json_fields() {
        let t = SubjectTemplate::parse("orders.{{key}}.{{region.code}}").unwrap();
        let e = Event::new(r#"{"region":{"code":"eu"}}"#).with_key("k1");
        let mut s = String::new();
        t.render(&e, &mut s).unwrap();
        assert_eq!(s, "orders.k1.eu");
        assert_eq!(SubjectTemplate::parse("a.b").unwrap().fixed(), Some("a.b"));
        let missing = t
            .render(&Event::new("{}").with_key("k"), &mut s)
            .unwrap_err();
        assert!(missing.message.contains("region.code"), "{missing}");
        assert!(SubjectTemplate::parse("a.{{key").is_err());
    }
}
