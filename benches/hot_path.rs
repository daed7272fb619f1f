//! Hot-path micro-benchmarks (issue 4, item 1): widget and dashboard
//! rendering, entry encoding, the in-process store's hit path and the key
//! builder. Run with
//! `cargo bench --bench hot_path -- --warm-up-time 1 --measurement-time 3`.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use maud::Markup;
use serde_json::{json, Value};

use percache::cache::key::UserTag;
use percache::cache::store::memory::MemoryStore;
use percache::cache::{Entry, Lookup, Outcome, Store};
use percache::clock::system_now_ms;
use percache::user::UserId;
use percache::views;
use percache::widget::{Instance, Registry};

const USER: &str = "loadtest";

/// The default instance of a built-in widget.
fn instance(id: &str) -> Instance {
    Registry::builtin()
        .default_instance(id)
        .expect("a built-in widget")
}

/// The five built-in widgets' default instances.
fn instances() -> Vec<Instance> {
    Registry::builtin()
        .all()
        .iter()
        .map(|w| w.default_instance())
        .collect()
}

/// Payloads shaped like the mock upstream's (SPEC §6), one per widget.
fn payload(widget: &Instance) -> Value {
    match widget.id().as_str() {
        "1" => json!({
            "name": USER,
            "email": "loadtest@example.com",
            "plan": "Team",
            "memberSince": "2019-04-17",
            "location": "Lisbon",
            "generatedAt": "2025-06-30T17:45:00Z",
            "version": 7,
        }),
        "2" => json!({
            "unread": 3,
            "items": [
                {"id": "n-1a2b3c4d-1", "title": "Chen commented on acme/api#412", "at": "2025-06-30T16:02:00Z"},
                {"id": "n-1a2b3c4d-2", "title": "Build #5521 failed on infra/terraform", "at": "2025-06-30T11:40:00Z"},
                {"id": "n-1a2b3c4d-3", "title": "Your weekly report is ready", "at": "2025-06-30T07:13:00Z"},
                {"id": "n-1a2b3c4d-4", "title": "Freya invited you to data/pipeline", "at": "2025-06-29T22:51:00Z"},
                {"id": "n-1a2b3c4d-5", "title": "Invoice INV-4821 was paid", "at": "2025-06-29T19:05:00Z"},
            ],
            "generatedAt": "2025-06-30T17:45:00Z",
            "version": 7,
        }),
        "3" => {
            let mut total = 0u64;
            let series: Vec<Value> = (0..14u64)
                .map(|i| {
                    let weekend = matches!(i % 7, 0 | 6);
                    let mut v = 1200 + 17 * i + (i * 7919) % 300;
                    if weekend {
                        v = v * 3 / 5;
                    }
                    total += v;
                    json!({ "day": format!("2025-06-{:02}", 17 + i), "value": v })
                })
                .collect();
            json!({
                "metric": "Page views",
                "total": total,
                "series": series,
                "generatedAt": "2025-06-30T17:45:00Z",
                "version": 7,
            })
        }
        "4" => json!({
            "plan": "Team",
            "amountDueCents": 29400,
            "currency": "USD",
            "dueDate": "2025-07-14",
            "invoices": [
                {"id": "INV-202506-3F2A", "amountCents": 29400, "status": "paid"},
                {"id": "INV-202505-3F2A", "amountCents": 29400, "status": "paid"},
                {"id": "INV-202504-3F2A", "amountCents": 29400, "status": "paid"},
            ],
            "generatedAt": "2025-06-30T17:45:00Z",
            "version": 7,
        }),
        _ => json!({
            "items": [
                {"action": "pushed", "target": "acme/web", "at": "2025-06-30T17:45:00Z"},
                {"action": "merged", "target": "acme/api#87", "at": "2025-06-30T16:10:00Z"},
                {"action": "reviewed", "target": "data/pipeline#12", "at": "2025-06-30T14:22:00Z"},
                {"action": "deployed", "target": "acme/billing", "at": "2025-06-30T09:31:00Z"},
                {"action": "opened", "target": "tools/cli#203", "at": "2025-06-29T21:48:00Z"},
                {"action": "closed", "target": "docs/handbook#9", "at": "2025-06-29T18:02:00Z"},
            ],
            "generatedAt": "2025-06-30T17:45:00Z",
            "version": 7,
        }),
    }
}

fn entry(widget: &Instance, now: i64) -> Arc<Entry> {
    Arc::new(Entry {
        data: serde_json::value::to_raw_value(&payload(widget)).expect("a JSON object"),
        fetched_at: now - 5_000,
        fresh_until: now + 55_000,
        stale_until: now + 595_000,
        grace_until: now + 86_395_000,
        fingerprint: widget.widget.fingerprint,
        generation: 1,
        started: 1,
        validators: Default::default(),
        rendered: Default::default(),
    })
}

/// A fresh-hit lookup, as the widget route renders it.
fn ready_lookup(widget: &Instance, now: i64) -> Lookup {
    Lookup {
        instance: widget.clone(),
        entry: Some(entry(widget, now)),
        outcome: Outcome::Hit { ttl: 55 },
        error: None,
        store_unavailable: false,
        now,
    }
}

fn render(lookup: &Lookup) -> String {
    views::widget_card(lookup).into_string()
}

/// The same lookup with a copy of its entry: nothing rendered for it yet
/// (as for an entry read from Redis with the L1 off, used once).
fn unrendered(lookup: &Lookup) -> Lookup {
    let mut fresh = lookup.clone();
    fresh.entry = lookup.entry.as_ref().map(|e| Arc::new((**e).clone()));
    fresh
}

fn bench_widget_card(c: &mut Criterion) {
    let now = system_now_ms();
    let analytics = ready_lookup(&instance("3"), now);
    let profile = ready_lookup(&instance("1"), now);
    let mut g = c.benchmark_group("widget_card");
    // An entry seen for the first time: decoded and rendered in full.
    for (name, lookup) in [("analytics_ready", &analytics), ("profile_ready", &profile)] {
        g.bench_function(name, |b| {
            b.iter_batched(|| unrendered(lookup), |l| render(&l), BatchSize::SmallInput)
        });
    }
    // A hit on an entry already shown: its two pre-rendered halves and the
    // age (`views::prerender`).
    let _ = (render(&analytics), render(&profile));
    g.bench_function("analytics_hit", |b| b.iter(|| render(black_box(&analytics))));
    g.bench_function("profile_hit", |b| b.iter(|| render(black_box(&profile))));
    g.finish();
}

fn bench_dashboard(c: &mut Criterion) {
    let now = system_now_ms();
    let user = UserId::parse(USER).expect("valid username");
    let lookups: Vec<Lookup> = instances().iter().map(|w| ready_lookup(w, now)).collect();
    let cards: Vec<Markup> = lookups.iter().map(views::widget_card).collect();
    let mut g = c.benchmark_group("dashboard_page");
    // The page around five already-rendered cards (clones the cards, as the route owns them).
    g.bench_function("five_prerendered_cards", |b| {
        b.iter_batched(
            || cards.clone(),
            |cards| views::dashboard_page(black_box(&user), &cards, Some(0), false).into_string(),
            BatchSize::SmallInput,
        )
    });
    let page = |lookups: &[Lookup]| {
        let cards: Vec<Markup> = lookups.iter().map(views::widget_card).collect();
        views::dashboard_page(&user, &cards, Some(0), false).into_string()
    };
    // Entries seen for the first time: every card rendered in full.
    g.bench_function("five_cards_rendered_inline", |b| {
        b.iter_batched(
            || lookups.iter().map(unrendered).collect::<Vec<_>>(),
            |l| page(&l),
            BatchSize::SmallInput,
        )
    });
    // What a fully warm GET /dashboard renders: five cards from their halves, and the page.
    g.bench_function("five_cards_inline_hit", |b| b.iter(|| page(black_box(&lookups))));
    g.finish();
}

fn bench_entry_codec(c: &mut Criterion) {
    let now = system_now_ms();
    let mut g = c.benchmark_group("entry");
    for (name, widget) in [("analytics", instance("3")), ("profile", instance("1"))] {
        let e = entry(&widget, now);
        let bytes = e.encode();
        g.throughput(Throughput::Bytes(bytes.len() as u64));
        g.bench_function(format!("encode_{name}"), |b| b.iter(|| black_box(&e).encode()));
        g.bench_function(format!("decode_{name}"), |b| {
            b.iter(|| Entry::decode(black_box(&bytes)).expect("decodes"))
        });
    }
    g.finish();
}

fn bench_memory_store(c: &mut Criterion) {
    // Criterion's `async_tokio` feature is not enabled: block_on per iteration.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let now = system_now_ms();
    let store = MemoryStore::new(100_000);
    let key = UserTag::of(USER).key(&instance("3"));
    let ttl = Duration::from_secs(600 + 86_400);
    rt.block_on(store.put(&key, entry(&instance("3"), now), ttl, None))
        .expect("put");
    // A second store holding 10k users x 5 widgets, to see the hit path at size.
    let big = MemoryStore::new(100_000);
    rt.block_on(async {
        let e = entry(&instance("3"), now);
        for i in 0..10_000 {
            let tag = UserTag::of(&format!("user{i}"));
            for w in instances() {
                big.put(&tag.key(&w), e.clone(), ttl, None).await.expect("put");
            }
        }
        big.put(&key, e, ttl, None).await.expect("put");
    });
    let miss = UserTag::of("nobody").key(&instance("3"));

    let mut g = c.benchmark_group("memory_store");
    g.bench_function("get_hit", |b| {
        b.iter(|| {
            rt.block_on(store.get(black_box(&key)))
                .expect("get")
                .expect("hit")
        })
    });
    g.bench_function("get_hit_50k_entries", |b| {
        b.iter(|| rt.block_on(big.get(black_box(&key))).expect("get").expect("hit"))
    });
    g.bench_function("get_miss", |b| {
        b.iter(|| rt.block_on(store.get(black_box(&miss))).expect("get"))
    });
    g.finish();
}

fn bench_keys(c: &mut Criterion) {
    let tag = UserTag::of(USER);
    let analytics = instance("3");
    let mut g = c.benchmark_group("key");
    g.bench_function("user_tag_of", |b| b.iter(|| UserTag::of(black_box(USER))));
    g.bench_function("tag_key", |b| {
        b.iter(|| black_box(&tag).key(black_box(&analytics)))
    });
    g.finish();
}

criterion_group!(
    benches,
    bench_widget_card,
    bench_dashboard,
    bench_entry_codec,
    bench_memory_store,
    bench_keys
);
criterion_main!(benches);
