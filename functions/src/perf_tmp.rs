use std::time::Instant;
use weir_engine::Event;
use crate::testing::build;

#[tokio::test]
#[ignore]
async fn perf() {
    let n = 200_000;
    let events: Vec<Event> = (0..n).map(|i| Event::new(format!(r#"{{"id": {i}, "user": {{"id": "u-{}", "name": "ada lovelace"}}, "amount": {}, "tags": ["a", "b"], "ts": "2024-01-01T00:00:00Z"}}"#, i % 100, i % 300))).collect();
    for (kind, opts) in [("json-add-field", "field = 'env'\nvalue = 'prod'"), ("jq", "expr = '.env = \"prod\"'"), ("jq", "expr = 'select(.amount > 100) | .flag = true'"), ("json", "require = ['id']"), ("key-by", "field = 'user.id'"), ("key-by", "expr = '.user.id'"), ("route", "rules = [{ when = '.amount > 250', sink = 'audit' }]"), ("sample", "rate = 0.5")] {
        let f = build(kind, opts).unwrap();
        let spec = weir_engine::StepSpec { name: "s".into(), factory: f, metrics: weir_engine::telemetry::StepMetrics::new("s") };
        let t = Instant::now();
        let mut chain = weir_engine::StepChain::build(&[spec], Default::default()).unwrap();
        println!("build {:?}", t.elapsed());
        let mut total = std::time::Duration::ZERO;
        for chunk in events.chunks(1000) {
            let batch = chunk.to_vec();
            let t = Instant::now();
            let mut out = weir_engine::ChainOutput::default();
            chain.run(batch, &mut out).await;
            total += t.elapsed();
            drop(out);
        }
        println!("{kind:15} {opts:60} {:>8.0} k events/s", n as f64 / total.as_secs_f64() / 1000.0);
    }
    let p = crate::jq::compile(".env = \"prod\"").unwrap();
    let t = Instant::now();
    let mut buf = bytes::BytesMut::new();
    for e in &events {
        let v = crate::jq::parse_json(&e.value).unwrap();
        for o in p.run(v) { crate::jq::write_json(&o.unwrap(), &mut buf); }
        std::hint::black_box(buf.split());
    }
    let t = Instant::now();
    for e in &events { std::hint::black_box(crate::jq::parse_json(&e.value).unwrap()); }
    println!("parse only {:>8.0} k events/s", n as f64 / t.elapsed().as_secs_f64() / 1000.0);
    let t = Instant::now();
    for e in &events { let v = crate::jq::parse_json(&e.value).unwrap(); for o in p.run(v) { std::hint::black_box(o.unwrap()); } }
    println!("parse+run {:>8.0} k events/s", n as f64 / t.elapsed().as_secs_f64() / 1000.0);
    let v = crate::jq::parse_json(&events[0].value).unwrap();
    let t = Instant::now();
    for _ in &events { crate::jq::write_json(&v, &mut buf); std::hint::black_box(buf.split()); }
    println!("write only {:>8.0} k events/s", n as f64 / t.elapsed().as_secs_f64() / 1000.0);
    println!("plain jaq loop {:>8.0} k events/s", n as f64 / t.elapsed().as_secs_f64() / 1000.0);
    // baseline: naive serde_json
    let t = Instant::now();
    for e in &events {
        let mut m: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&e.value).unwrap();
        m.insert("env".into(), "prod".into());
        let v = serde_json::to_vec(&m).unwrap();
        std::hint::black_box(v);
    }
    println!("naive serde_json map {:>8.0} k events/s", n as f64 / t.elapsed().as_secs_f64() / 1000.0);
}
