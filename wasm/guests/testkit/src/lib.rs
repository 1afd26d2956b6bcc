//! `testkit`: a function whose misbehaviour is chosen by its config, for
//! weir's own tests. Every event is tagged with the header `version` = the
//! config value `tag` (default `testkit`) and passed on, except:
//! - a value containing `panic` panics (a trap),
//! - a value containing `spin` loops forever (the deadline stops it),
//! - a value containing `hog` allocates until the memory cap stops it,
//! - with `fail_every = N`, every event whose value, read as a decimal
//!   number (or else its length), is divisible by N fails (not retryable).
//! `init` fails when the config has `refuse = "…"`.

use weir_guest::{Config, Event, Function, Header, Out, Output};

struct Testkit {
    tag: Vec<u8>,
    fail_every: Option<u64>,
    hoard: Vec<Vec<u8>>,
}

impl Function for Testkit {
    fn init(config: &Config) -> Result<Self, String> {
        if let Some(why) = config.get("refuse") {
            return Err(why.to_string());
        }
        let fail_every = match config.get("fail_every") {
            Some(n) => Some(n.parse::<u64>().map_err(|e| format!("fail_every: {e}"))?),
            None => None,
        };
        Ok(Testkit {
            tag: config.get("tag").unwrap_or("testkit").as_bytes().to_vec(),
            fail_every,
            hoard: Vec::new(),
        })
    }

    fn process(&mut self, event: &Event<'_>, out: &mut Out<'_>) {
        let value = event.value;
        if contains(value, b"panic") {
            panic!(
                "testkit was told to panic on {}",
                String::from_utf8_lossy(value)
            );
        }
        if contains(value, b"spin") {
            let mut n: u64 = 0;
            loop {
                n = std::hint::black_box(n.wrapping_add(1));
            }
        }
        if contains(value, b"hog") {
            loop {
                self.hoard.push(vec![1u8; 1 << 20]);
            }
        }
        if let Some(every) = self.fail_every {
            let n = std::str::from_utf8(value)
                .ok()
                .and_then(|s| s.trim().trim_matches('"').parse::<u64>().ok())
                .unwrap_or(value.len() as u64);
            if every > 0 && n % every == 0 {
                return out.fail(format!("testkit fails every {every}th event"));
            }
        }
        let mut headers = event.headers.to_vec();
        headers.push(Header {
            name: "version".to_string(),
            value: self.tag.clone(),
        });
        out.emit(Output {
            key: event.key,
            value,
            headers,
        });
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

weir_guest::export_function!(Testkit);
