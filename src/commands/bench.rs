//! `palate bench …`: the benchmarks' commands, and the parts `scripts/bench_cost.sh` runs as
//! separate processes (a zero-cost simulated server, a synthetic catalogue).

use anyhow::Context;

use crate::cli::{
    CalibrateArgs, CatalogueArgs, EmbeddingArgs, SchedulingArgs, SelectionArgs, ServeArgs,
    StepsArgs,
};
use crate::config::Config;
use crate::domain::exit;
use crate::ingest::ingest_file;
use crate::output;
use crate::store::Store;

pub async fn bench_selection(a: &SelectionArgs) -> anyhow::Result<u8> {
    anyhow::ensure!(
        a.rounds >= 3 && a.per_round >= 1,
        "--rounds must be at least 3, --per-round at least 1"
    );
    let w = crate::bench::selection::SelectionWorkload {
        reviews: a.reviews,
        dim: a.dim,
        k: a.k,
        diverse: a.diverse,
        lambda: a.lambda,
        rounds: a.rounds,
        per_round: a.per_round,
        qdrant_url: a.qdrant.clone(),
    };
    let timings = crate::bench::selection::selection(&w).await?;
    output::selection_report(&w, &timings);
    if let Some(path) = &a.json {
        let doc = serde_json::json!({"workload": w, "timings": timings});
        std::fs::write(path, serde_json::to_string_pretty(&doc)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(exit::OK)
}

pub async fn bench_serve(a: &ServeArgs) -> anyhow::Result<u8> {
    let mut profile = match &a.profile {
        Some(p) => crate::sim::Profile::load(p)?,
        None => crate::sim::Profile::builtin(),
    };
    let e = &mut profile.engine;
    if a.zero_cost {
        e.latency = crate::sim::LatencyModel::constant(0.0);
        e.kv_blocks = 0;
    }
    e.priority_scheduling |= a.priority;
    e.time_scale = a.time_scale.unwrap_or(e.time_scale);
    e.max_num_seqs = a.max_num_seqs.unwrap_or(e.max_num_seqs);
    anyhow::ensure!(
        a.output_scale > 0.0 && e.time_scale > 0.0,
        "--output-scale and --time-scale must be above 0"
    );
    if let Some(db) = &a.outputs_from {
        let mut outputs = crate::sim::profile::outputs_from_run(db, None, a.reviews_per_sentiment)?;
        for (kind, o) in &mut outputs {
            o.mask_ms = profile.outputs.get(kind).and_then(|p| p.mask_ms);
        }
        profile.outputs = outputs;
    }
    for o in profile.outputs.values_mut() {
        for t in &mut o.tokens {
            *t = ((f64::from(*t) * a.output_scale).round() as u32).max(1);
        }
    }
    let name = profile.name.clone();
    let cfg = crate::sim::SimConfig {
        models: a.models.clone(),
        replay_outputs: a.replay_outputs,
        ..crate::sim::SimConfig::from_profile(profile)
    };
    let server = crate::sim::SimServer::start_at(cfg, &a.addr)
        .await
        .with_context(|| format!("cannot listen on {}", a.addr))?;
    output::line(&format!(
        "simulated server at {} ({}{})",
        server.url,
        if a.zero_cost { "zero cost, " } else { "" },
        name
    ));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    output::line(&format!("{} chat requests served", server.requests()));
    Ok(exit::OK)
}

pub async fn bench_scheduling(a: &SchedulingArgs) -> anyhow::Result<u8> {
    use crate::bench::{Mode, ModeSpec, WorkloadSpec};
    let spec = ModeSpec {
        endpoint: a.endpoint.clone(),
        model: a.model.clone(),
        mode: serde_json::from_value(serde_json::Value::String(a.mode.clone()))
            .with_context(|| format!("no mode {}", a.mode))?,
        concurrency: a.concurrency,
        arrival_rate: a.arrival_rate,
        seed: a.seed,
        max_in_flight: a.max_in_flight,
        max_num_seqs: a.max_num_seqs,
        workload: WorkloadSpec {
            restaurants: a.restaurants,
            reviews_per_restaurant: a.reviews,
            sentiment_batch: a.sentiment_batch,
            review_scale: a.review_scale,
            max_tokens: a.max_tokens,
            reviews_file: a.reviews_file.clone(),
            prompts_dir: a.prompts_dir.clone(),
        },
    };
    if let Some(path) = &a.export_workload {
        let plans = crate::bench::workload::plans(&spec.workload)?;
        let mut job = crate::config::JobFile::default();
        job.llm.endpoints = vec![spec.endpoint.clone()];
        job.llm.send_priority = spec.mode == Mode::Priority;
        let client = crate::infer::OpenAiClient::new(&crate::config::Config::validate(job)?.llm)?;
        let n = crate::bench::workload::export(&plans, &spec.model, &client, path)?;
        output::line(&format!("{n} requests written to {}", path.display()));
        return Ok(exit::OK);
    }
    let report = crate::bench::scheduling::run(spec).await?;
    output::mode_report(&report);
    if let Some(path) = &a.json {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("cannot write {}", path.display()))?;
        std::io::Write::write_all(
            &mut f,
            format!("{}\n", serde_json::to_string(&report)?).as_bytes(),
        )?;
    }
    Ok(exit::OK)
}

pub async fn bench_embedding(a: &EmbeddingArgs) -> anyhow::Result<u8> {
    let cfg = Config::from_args(&a.job)?;
    let texts = texts_of(&a.texts)?;
    let embedder = crate::embed::load(&cfg.embed).await?;
    embedder
        .embed(texts[..texts.len().min(32)].to_vec())
        .await?; // warm-up
    output::line(&format!(
        "{} texts of {}, embedder {} (batch {}, threads {}):",
        texts.len(),
        a.texts.display(),
        embedder.model_id(),
        cfg.embed.batch_size,
        cfg.embed.threads
    ));
    for round in 1..=a.rounds.max(1) {
        let t = std::time::Instant::now();
        let n = embedder.embed(texts.clone()).await?.len();
        let secs = t.elapsed().as_secs_f64();
        output::line(&format!(
            "round {round}: {:.1} reviews/s ({secs:.1} s)",
            n as f64 / secs
        ));
    }
    Ok(exit::OK)
}

/// The `text` field of every line of a JSONL file.
fn texts_of(path: &std::path::Path) -> anyhow::Result<Vec<String>> {
    let texts: Vec<String> = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["text"].as_str().map(str::to_string))
        .collect();
    anyhow::ensure!(!texts.is_empty(), "no texts in {}", path.display());
    Ok(texts)
}

pub async fn bench_catalogue(a: &CatalogueArgs) -> anyhow::Result<u8> {
    let cfg = Config::from_args(&a.job)?;
    let texts = texts_of(&a.texts)?;
    let file = write_catalogue(a, &texts, &cfg.job.database)?;
    let store = Store::open(&cfg.job.database)?;
    let opts = cfg.ingest_options();
    let f = file.clone();
    let report = store
        .with_db(move |db| ingest_file(db, &f, &opts))
        .await??;
    output::ingest_report(&report);
    let model = cfg.embed.cache_id();
    let stored = random_vectors(&store, &model).await?;
    std::fs::remove_file(&file).ok();
    output::line(&format!("{stored} random vectors stored under {model}"));
    Ok(exit::OK)
}

/// `a.restaurants` × `a.reviews` reviews as a JSONL file beside the database.
fn write_catalogue(
    a: &CatalogueArgs,
    texts: &[String],
    database: &std::path::Path,
) -> anyhow::Result<std::path::PathBuf> {
    let dir = database
        .parent()
        .unwrap_or(std::path::Path::new("."))
        .to_path_buf();
    std::fs::create_dir_all(&dir)?;
    let file = dir.join(format!("catalogue-{}x{}.jsonl", a.restaurants, a.reviews));
    let mut out = std::io::BufWriter::new(std::fs::File::create(&file)?);
    for r in 0..a.restaurants {
        for i in 0..a.reviews {
            // Each review its own text (a numbered copy), so each is embedded and stored apart.
            let text = format!("{} #{r}-{i}", texts[(r * 7 + i) % texts.len()]);
            let row = serde_json::json!({"restaurant_id": format!("bench-{r:06}"),
                "review_id": format!("bench-{r:06}-{i:03}"), "text": text, "rating": (i % 5) + 1});
            std::io::Write::write_all(&mut out, format!("{row}\n").as_bytes())?;
        }
    }
    std::io::Write::flush(&mut out)?;
    Ok(file)
}

/// Seeded random unit vectors for every review lacking one under `model`; how many.
async fn random_vectors(store: &Store, model: &str) -> anyhow::Result<usize> {
    let mut rng = fastrand::Rng::with_seed(11);
    let (mut stored, mut after) = (0, String::new());
    loop {
        // Keyset paging on the content hash: each page starts where the last one ended.
        let todo = store
            .missing_embeddings_after(model.to_string(), None, after.clone(), 10_000)
            .await?;
        let Some((last, _)) = todo.last() else {
            return Ok(stored);
        };
        after = last.clone();
        stored += todo.len();
        let vecs = (todo.into_iter())
            .map(|(h, _)| {
                (
                    h,
                    crate::embed::normalise((0..384).map(|_| rng.f32() - 0.5).collect()),
                )
            })
            .collect();
        store.put_embeddings(model.to_string(), vecs).await?;
    }
}

pub fn bench_steps(a: &StepsArgs) -> anyhow::Result<u8> {
    let profile = crate::sim::Profile::load(&a.profile)?;
    let mut logs = Vec::new();
    for path in &a.logs {
        let text =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        let steps = crate::bench::steps::parse(&String::from_utf8_lossy(&text));
        anyhow::ensure!(
            steps.iter().any(|s| s.ms.is_some()),
            "{}: no timed step (is it a llama-server log with --debug-log?)",
            path.display()
        );
        logs.push((path.display().to_string(), steps));
    }
    let report = crate::bench::steps::price(&logs, &profile.engine.latency);
    output::line(&report.to_string());
    if let Some(path) = &a.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(exit::OK)
}

pub async fn bench_calibrate(a: &CalibrateArgs) -> anyhow::Result<u8> {
    let spec = crate::bench::calibrate::CalibrateSpec {
        endpoint: a.endpoint.clone(),
        model: a.model.clone(),
        parallel: a.parallel.clone(),
        decode_contexts: a.decode_contexts.clone(),
        prompt_tokens: a.prompts.clone(),
        mixed_prompts: a.mixed_prompts.clone(),
        mixed_decoding: a.mixed_decoding.clone(),
        mixed_contexts: a.mixed_contexts.clone(),
        output_tokens: a.output_tokens,
        rounds: a.rounds.max(1),
        max_num_seqs: a.max_num_seqs,
        max_num_batched_tokens: a.max_num_batched_tokens,
        kv_tokens: a.kv_tokens,
        reviews_file: a.reviews_file.clone(),
        outputs_from: a.outputs_from.clone(),
        reviews_per_sentiment: a.reviews_per_sentiment,
    };
    let c = crate::bench::calibrate::calibrate(spec).await?;
    output::calibration(&c);
    if let Some(dir) = a.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&a.out, c.profile.to_toml()?)
        .with_context(|| format!("cannot write {}", a.out.display()))?;
    output::line(&format!("profile written to {}", a.out.display()));
    if let Some(path) = &a.json {
        std::fs::write(path, serde_json::to_string_pretty(&c)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(exit::OK)
}
