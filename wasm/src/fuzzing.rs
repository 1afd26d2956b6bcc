//! The host side of the guest interface for the fuzz target
//! `wasm_outcomes` (fuzz/): a guest's `outcomes` — indexes, spans, routes
//! and actions it alone chooses — decoded from arbitrary bytes and applied
//! to a batch, exactly as a returned call is. Not part of the API.

use std::collections::HashMap;

use weir_engine::{Event, StepOutput};

use crate::bindings::weir::function::types::{
    Action, HeaderResult, Outcome, Outcomes, Output, Routed, Span,
};
use crate::convert::Applier;

/// Inputs in the batch the outcomes are applied to.
const BATCH: usize = 4;

/// Decodes `bytes` into a guest's outcomes and applies them to a batch of
/// [`BATCH`] events; checks that the batch was taken and that no output
/// is larger than the returned data. Panics on a broken invariant.
pub fn apply_outcomes(bytes: &[u8]) {
    let mut r = Reader(bytes);
    let data_len = r.u8() as usize * 4;
    let data = r.take(data_len).to_vec();
    let mut outcomes = Vec::new();
    while !r.0.is_empty() && outcomes.len() < 64 {
        // a few indexes past the batch's end too
        let input = u32::from(r.u8() % (BATCH as u8 + 2));
        let action = match r.u8() % 7 {
            0 => Action::Keep,
            1 => Action::Emit(r.output()),
            2 => Action::Route(Routed {
                sink: ["a", "b", "unlisted"][usize::from(r.u8() % 3)].to_string(),
                event: r.output(),
            }),
            3 => Action::Drop,
            4 => Action::Fail("failed".into()),
            5 => Action::Retry("retry".into()),
            _ => Action::Emit(r.output()),
        };
        outcomes.push(Outcome { input, action });
    }
    let mut inputs: Vec<Event> = (0..BATCH).map(|i| Event::new(format!("e{i}"))).collect();
    let routes = HashMap::from([("a".to_string(), 1), ("b".to_string(), 2)]);
    let mut out = StepOutput::new();
    let mut applier = Applier::default();
    let _misuse = applier.apply(Outcomes { data, outcomes }, &mut inputs, &routes, &mut out);
    assert!(inputs.is_empty(), "the batch is taken");
    for event in out.events.iter().chain(out.routed.iter().map(|(_, e)| e)) {
        assert!(
            event.value.len() <= data_len.max(2),
            "an output within the data"
        );
    }
}

/// A cursor over the fuzz bytes; past the end it reads zeros.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    fn u32(&mut self) -> u32 {
        // mostly small, sometimes huge: offsets and lengths near overflow
        match self.u8() {
            255 => u32::MAX - u32::from(self.u8()),
            b => u32::from(b) * 3,
        }
    }

    fn take(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        head
    }

    fn span(&mut self) -> Span {
        Span {
            offset: self.u32(),
            len: self.u32(),
        }
    }

    fn output(&mut self) -> Output {
        let key = (self.u8() & 1 == 1).then(|| self.span());
        let value = self.span();
        let headers = (0..self.u8() % 3)
            .map(|i| HeaderResult {
                name: format!("h{i}"),
                value: vec![self.u8()],
            })
            .collect();
        Output {
            key,
            value,
            headers,
        }
    }
}
