//! Between weir's events and the guest's: the batch lent to the guest
//! without copying on the host side, and the outcomes applied to a
//! [`StepOutput`].

use std::borrow::Cow;
use std::collections::HashMap;

use bytes::Bytes;
use weir_engine::{Event, SinkId, StepOutput};

use crate::bindings::weir::function::types::{
    Action, Event as GuestEvent, HeaderParam, HeaderResult, Outcome, Outcomes, Output, Span,
};

/// Header names as `&str`: borrowed when valid UTF-8 (always, in practice),
/// else a lossy copy.
pub fn header_names(events: &[Event]) -> Vec<Cow<'_, str>> {
    let mut names = Vec::with_capacity(events.iter().map(|e| e.headers.len()).sum());
    for event in events {
        for (name, _) in &event.headers {
            names.push(String::from_utf8_lossy(name));
        }
    }
    names
}

/// Every header of the batch in one vector, in event order.
pub fn header_params<'a>(events: &'a [Event], names: &'a [Cow<'a, str>]) -> Vec<HeaderParam<'a>> {
    let mut headers = Vec::with_capacity(names.len());
    let mut i = 0;
    for event in events {
        for (_, value) in &event.headers {
            headers.push(HeaderParam {
                name: &names[i],
                value,
            });
            i += 1;
        }
    }
    headers
}

/// The batch's events as the guest's records: keys and values are copied
/// back to back into `data` (cleared first), headers are borrowed.
pub fn event_params<'a>(
    events: &[Event],
    headers: &'a [HeaderParam<'a>],
    data: &mut Vec<u8>,
) -> Vec<GuestEvent<'a>> {
    data.clear();
    let mut start = 0;
    events
        .iter()
        .map(|event| {
            let end = start + event.headers.len();
            let key = event.key.as_ref().map(|k| span_of(data, k));
            let param = GuestEvent {
                key,
                value: span_of(data, &event.value),
                headers: &headers[start..end],
                timestamp_ms: event.timestamp_ms,
            };
            start = end;
            param
        })
        .collect()
}

fn span_of(data: &mut Vec<u8>, bytes: &[u8]) -> Span {
    let offset = data.len() as u32;
    data.extend_from_slice(bytes);
    Span {
        offset,
        len: bytes.len() as u32,
    }
}

/// Applies outcomes to a batch; keeps its buffers across batches.
#[derive(Default)]
pub struct Applier {
    /// Outcomes still to come per input.
    remaining: Vec<u32>,
    /// Per input, whether its outcomes contradict each other (a `fail` or
    /// `retry` beside any other outcome).
    conflicted: Vec<bool>,
    /// The inputs, taken by their last outcome.
    slots: Vec<Option<Event>>,
}

/// What applying a batch's outcomes found wrong with them.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Misuse {
    /// Outcomes naming an input past the batch's end (ignored).
    pub bad_index: usize,
    /// Outputs whose spans fall outside the returned data (their input fails).
    pub bad_span: usize,
    /// Inputs given a `fail` or `retry` beside other outcomes (they fail
    /// once, and nothing else of theirs is applied: an emitted event and a
    /// retry of its input would deliver it twice).
    pub conflicting: usize,
}

impl Applier {
    /// Applies `outcomes` to `inputs` (which it empties): every input gets
    /// what its outcomes say, in their order; inputs no outcome names are
    /// dropped. Emitted and routed events keep their input's origin and
    /// event time.
    pub fn apply(
        &mut self,
        outcomes: Outcomes,
        inputs: &mut Vec<Event>,
        routes: &HashMap<String, SinkId>,
        out: &mut StepOutput,
    ) -> Misuse {
        let n = inputs.len();
        let mut misuse = Misuse::default();
        let Outcomes { data, outcomes } = outcomes;
        let data = Bytes::from(data);
        self.remaining.clear();
        self.remaining.resize(n, 0);
        self.conflicted.clear();
        self.conflicted.resize(n, false);
        let mut failing = std::mem::take(&mut self.conflicted);
        for o in &outcomes {
            match self.remaining.get_mut(o.input as usize) {
                Some(count) => {
                    *count += 1;
                    // `failing` counts as "has a fail or retry" for now
                    failing[o.input as usize] |=
                        matches!(o.action, Action::Fail(_) | Action::Retry(_));
                }
                None => misuse.bad_index += 1,
            }
        }
        for (i, f) in failing.iter_mut().enumerate() {
            *f = *f && self.remaining[i] > 1;
            misuse.conflicting += usize::from(*f);
        }
        self.conflicted = failing;
        self.slots.clear();
        self.slots.extend(inputs.drain(..).map(Some));
        for Outcome { input, action } in outcomes {
            let i = input as usize;
            if i >= n {
                continue;
            }
            if self.conflicted[i] {
                continue;
            }
            self.remaining[i] -= 1;
            let last = self.remaining[i] == 0;
            let Some(original) = self.slots[i].as_ref() else {
                continue;
            };
            let (origin, timestamp_ms) = (original.origin, original.timestamp_ms);
            match action {
                Action::Keep => out.emit(self.input(i, last)),
                Action::Emit(output) => match event_from(output, &data, origin, timestamp_ms) {
                    Some(event) => {
                        if last {
                            self.slots[i] = None;
                        }
                        out.emit(event);
                    }
                    None => {
                        misuse.bad_span += 1;
                        out.fail(self.input(i, last), BAD_SPAN);
                    }
                },
                Action::Route(routed) => match routes.get(&routed.sink) {
                    Some(&sink) => match event_from(routed.event, &data, origin, timestamp_ms) {
                        Some(event) => {
                            if last {
                                self.slots[i] = None;
                            }
                            out.route(sink, event);
                        }
                        None => {
                            misuse.bad_span += 1;
                            out.fail(self.input(i, last), BAD_SPAN);
                        }
                    },
                    None => {
                        let reason = format!(
                            "the function routed to sink `{}`, which the step's `routes` does not list",
                            routed.sink
                        );
                        out.fail(self.input(i, last), reason);
                    }
                },
                Action::Drop => {
                    if last {
                        out.drop_event(self.input(i, true));
                    }
                }
                Action::Fail(reason) => out.fail(self.input(i, last), reason),
                Action::Retry(reason) => out.fail_retryable(self.input(i, last), reason),
            }
        }
        for (i, slot) in self.slots.drain(..).enumerate() {
            let Some(event) = slot else { continue };
            if self.conflicted[i] {
                out.fail(event, CONFLICTING);
            } else {
                // no outcome named it
                out.drop_event(event);
            }
        }
        misuse
    }

    /// Input `i`: taken by its last outcome, else a copy (payloads are shared).
    fn input(&mut self, i: usize, last: bool) -> Event {
        if last {
            self.slots[i].take().unwrap_or_default()
        } else {
            self.slots[i].clone().unwrap_or_default()
        }
    }
}

/// Why an input with contradicting outcomes fails.
const CONFLICTING: &str =
    "the function gave this event `fail` or `retry` beside other outcomes; none was applied";

/// Why an input whose output's bytes were out of range fails.
const BAD_SPAN: &str =
    "the function returned an output whose key or value lies outside the data it returned";

/// The event an output describes; `None` if a span is out of range.
fn event_from(
    output: Output,
    data: &Bytes,
    origin: weir_engine::Origin,
    timestamp_ms: i64,
) -> Option<Event> {
    let key = match output.key {
        Some(span) => Some(slice(data, span)?),
        None => None,
    };
    Some(Event {
        key,
        value: slice(data, output.value)?,
        headers: output
            .headers
            .into_iter()
            .map(|HeaderResult { name, value }| (Bytes::from(name), Bytes::from(value)))
            .collect(),
        timestamp_ms,
        origin,
    })
}

/// `span` of `data`, sharing its buffer.
fn slice(data: &Bytes, span: Span) -> Option<Bytes> {
    let start = span.offset as usize;
    let end = start.checked_add(span.len as usize)?;
    (end <= data.len()).then(|| data.slice(start..end))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An output whose value is `len` bytes at `offset` of the returned data.
    fn output(offset: u32, len: u32) -> Output {
        Output {
            key: None,
            value: Span { offset, len },
            headers: vec![HeaderResult {
                name: "h".into(),
                value: b"1".to_vec(),
            }],
        }
    }

    fn returned(outcomes: Vec<Outcome>) -> Outcomes {
        Outcomes {
            data: b"abr".to_vec(),
            outcomes,
        }
    }

    fn events() -> Vec<Event> {
        (0..4)
            .map(|i| {
                Event::new(format!("e{i}"))
                    .with_offset(100 + i)
                    .with_timestamp_ms(7)
            })
            .collect()
    }

    #[test]
    fn every_action_lands_where_it_should_and_unnamed_inputs_are_dropped() {
        let mut routes = HashMap::new();
        routes.insert("audit".to_string(), 3 as SinkId);
        let outcomes = vec![
            Outcome {
                input: 0,
                action: Action::Keep,
            },
            Outcome {
                input: 1,
                action: Action::Emit(output(0, 1)),
            },
            Outcome {
                input: 1,
                action: Action::Emit(output(1, 1)),
            },
            Outcome {
                input: 2,
                action: Action::Route(weir_guest_routed("audit", output(2, 1))),
            },
            Outcome {
                input: 4,
                action: Action::Retry("later".into()),
            },
            Outcome {
                input: 9,
                action: Action::Drop,
            },
        ];
        let mut inputs = events();
        inputs.push(Event::new("e4").with_offset(104));
        let mut out = StepOutput::new();
        let misuse = Applier::default().apply(returned(outcomes), &mut inputs, &routes, &mut out);
        assert_eq!(misuse.bad_index, 1);
        assert_eq!(misuse.conflicting, 0);
        let values: Vec<_> = out.events.iter().map(|e| e.value.clone()).collect();
        assert_eq!(
            values,
            vec![Bytes::from("e0"), Bytes::from("a"), Bytes::from("b")]
        );
        assert_eq!(
            out.events[1].origin.offset, 101,
            "emitted events keep their input's origin"
        );
        assert_eq!(
            out.events[2].header("h").map(|v| v.as_ref()),
            Some(&b"1"[..])
        );
        assert_eq!(out.routed.len(), 1);
        assert_eq!(out.routed[0].0, 3);
        assert_eq!(out.routed[0].1.origin.offset, 102);
        assert_eq!(out.failed.len(), 1);
        assert!(out.failed[0].retryable);
        assert_eq!(out.failed[0].event.value, Bytes::from("e4"));
        assert_eq!(out.dropped, 1, "input 3 had no outcome");
    }

    #[test]
    fn an_output_outside_the_returned_data_fails_its_input() {
        let outcomes = vec![Outcome {
            input: 0,
            action: Action::Emit(output(2, 5)),
        }];
        let mut inputs = events();
        inputs.truncate(1);
        let mut out = StepOutput::new();
        let misuse =
            Applier::default().apply(returned(outcomes), &mut inputs, &HashMap::new(), &mut out);
        assert_eq!(misuse.bad_span, 1);
        assert_eq!(out.failed.len(), 1);
        assert!(out.events.is_empty());
    }

    #[test]
    fn a_failure_beside_other_outcomes_fails_the_input_once_and_applies_nothing() {
        let outcomes = vec![
            Outcome {
                input: 0,
                action: Action::Emit(output(0, 1)),
            },
            Outcome {
                input: 0,
                action: Action::Retry("later".into()),
            },
            Outcome {
                input: 1,
                action: Action::Fail("a".into()),
            },
            Outcome {
                input: 1,
                action: Action::Fail("b".into()),
            },
            Outcome {
                input: 2,
                action: Action::Fail("only".into()),
            },
        ];
        let mut inputs = events();
        inputs.truncate(3);
        let mut out = StepOutput::new();
        let misuse =
            Applier::default().apply(returned(outcomes), &mut inputs, &HashMap::new(), &mut out);
        assert_eq!(misuse.conflicting, 2);
        assert!(out.events.is_empty(), "nothing of input 0 was emitted");
        assert_eq!(out.failed.len(), 3);
        assert!(out.failed.iter().all(|f| !f.retryable));
        assert_eq!(out.failed.iter().filter(|f| f.reason == "only").count(), 1);
        assert_eq!(
            out.failed
                .iter()
                .filter(|f| f.reason == CONFLICTING)
                .count(),
            2
        );
    }

    #[test]
    fn routing_to_an_undeclared_sink_fails_the_event() {
        let outcomes = vec![Outcome {
            input: 0,
            action: Action::Route(weir_guest_routed("nope", output(0, 1))),
        }];
        let mut inputs = events();
        inputs.truncate(1);
        let mut out = StepOutput::new();
        Applier::default().apply(returned(outcomes), &mut inputs, &HashMap::new(), &mut out);
        assert_eq!(out.failed.len(), 1);
        assert!(out.failed[0].reason.contains("`nope`"));
        assert!(!out.failed[0].retryable);
    }

    #[test]
    fn params_put_keys_and_values_in_one_buffer_and_borrow_headers() {
        let mut events = events();
        events[1]
            .headers
            .push((Bytes::from_static(b"a"), Bytes::from_static(b"x")));
        events[1]
            .headers
            .push((Bytes::from_static(b"\xff"), Bytes::from_static(b"y")));
        events[2].key = Some(Bytes::from_static(b"k"));
        let names = header_names(&events);
        let headers = header_params(&events, &names);
        let mut data = vec![9, 9];
        let params = event_params(&events, &headers, &mut data);
        assert_eq!(params.len(), 4);
        assert_eq!(params[1].headers.len(), 2);
        assert_eq!(params[1].headers[1].name, "\u{fffd}");
        let at = |s: Span| &data[s.offset as usize..(s.offset + s.len) as usize];
        assert_eq!(params[2].key.map(at), Some(&b"k"[..]));
        assert_eq!(at(params[3].value), b"e3");
        assert_eq!(at(params[0].value), b"e0", "the buffer was cleared first");
        assert_eq!(params[0].timestamp_ms, 7);
    }

    fn weir_guest_routed(
        sink: &str,
        event: Output,
    ) -> crate::bindings::weir::function::types::Routed {
        crate::bindings::weir::function::types::Routed {
            sink: sink.into(),
            event,
        }
    }
}
