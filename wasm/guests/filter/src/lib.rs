//! `filter`: keeps JSON events whose field `field` equals `equals` (both
//! from the step's `config`); drops the others; fails values that are not
//! JSON.

use weir_guest::{Config, Event, Function, Out};

struct Filter {
    field: String,
    equals: serde_json::Value,
}

impl Function for Filter {
    fn init(config: &Config) -> Result<Self, String> {
        let equals = config.require("equals")?;
        Ok(Filter {
            field: config.require("field")?.to_string(),
            // a JSON literal, or else the text as a string
            equals: serde_json::from_str(equals)
                .unwrap_or_else(|_| serde_json::Value::String(equals.to_string())),
        })
    }

    fn process(&mut self, event: &Event<'_>, out: &mut Out<'_>) {
        match serde_json::from_slice::<serde_json::Value>(event.value) {
            Ok(v) if v.get(&self.field) == Some(&self.equals) => out.keep(),
            Ok(_) => out.drop(),
            Err(e) => out.fail(format!("not JSON: {e}")),
        }
    }
}

weir_guest::export_function!(Filter);
