//! Shared test helpers: paths to the real parts installed by `scripts/setup.sh`, a real
//! llama.cpp server on a free port, job files for a temporary database.
#![allow(dead_code)]

pub mod appdb;
pub mod qdrant;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The asset cache (`PALATE_CACHE`, default `.cache/`). Tests need it: `scripts/test.sh` runs
/// `scripts/setup.sh` first. A missing asset fails the test with what to run.
pub fn cache() -> PathBuf {
    std::env::var_os("PALATE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".cache"))
}

pub fn require(p: &Path) -> PathBuf {
    assert!(
        p.exists(),
        "{} is missing: run scripts/setup.sh (scripts/test.sh does)",
        p.display()
    );
    p.to_path_buf()
}

pub fn ort_dylib() -> PathBuf {
    require(&cache().join("onnxruntime/libonnxruntime.so.1.24.4"))
}

pub fn embed_model_dir() -> PathBuf {
    require(&cache().join("models/me5"))
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}

/// llama.cpp's `llama-server` with SmolLM2-135M, killed on drop.
pub struct LlamaServer {
    child: Child,
    pub base_url: String,
}

impl LlamaServer {
    pub fn start() -> Self {
        Self::start_on(free_port())
    }

    /// On `port`: a server started again where palate already points.
    pub fn start_on(port: u16) -> Self {
        Self::start_with(port, &[])
    }

    /// Serving `/v1/embeddings` (mean pooling over SmolLM2's hidden states).
    pub fn start_embeddings() -> Self {
        Self::start_with(free_port(), &["--embeddings"])
    }

    fn start_with(port: u16, extra: &[&str]) -> Self {
        let python = require(&cache().join("llm/venv/bin/python"));
        let model = require(&cache().join("llm/smollm2-135m-instruct-q4_1.gguf"));
        let log =
            std::fs::File::create(std::env::temp_dir().join(format!("palate-llama-{port}.log")))
                .unwrap();
        let child = Command::new(python)
            .arg(root().join("scripts/serve_llm.py"))
            .args([
                "--model",
                model.to_str().unwrap(),
                "--port",
                &port.to_string(),
            ])
            .args([
                "--ctx",
                "16384",
                "--parallel",
                "4",
                "--threads",
                "2",
                "--metrics",
            ])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let base_url = format!("http://127.0.0.1:{port}/v1");
        let server = Self { child, base_url };
        server.wait_healthy(Duration::from_secs(180));
        server
    }

    pub fn port(&self) -> u16 {
        self.base_url
            .rsplit(':')
            .next()
            .and_then(|p| p.trim_end_matches("/v1").parse().ok())
            .unwrap()
    }

    /// SIGKILL, as a crash or an OOM kill would.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn wait_healthy(&self, limit: Duration) {
        let t = Instant::now();
        let url = self.base_url.replace("/v1", "/health");
        while t.elapsed() < limit {
            if let Ok(out) = Command::new("curl").args(["-sf", "-m", "2", &url]).output() {
                if out.status.success() {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        panic!("llama-server did not become healthy at {url} within {limit:?}");
    }
}

impl Drop for LlamaServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes a job file in `dir` for a temporary database and the given inputs and endpoint.
pub fn job(dir: &Path, endpoint: &str, inputs: &[PathBuf]) -> PathBuf {
    job_with(
        dir,
        &[endpoint],
        inputs,
        "smollm2",
        "read_timeout_s = 600\nrequest_timeout_s = 1200",
    )
}

/// A job file; `llm_extra` lines are appended to its `[llm]` section (the last one).
pub fn job_with(
    dir: &Path,
    endpoints: &[&str],
    inputs: &[PathBuf],
    model: &str,
    llm_extra: &str,
) -> PathBuf {
    let inputs: Vec<String> = inputs
        .iter()
        .map(|p| format!("{:?}", p.display().to_string()))
        .collect();
    let text = format!(
        r#"[job]
name = "test"
database = {db:?}
inputs = [{inputs}]
rejects_dir = {rej:?}
restaurant_concurrency = 3

[embed]
model_dir = {model:?}
ort_dylib = {ort:?}

[select]
k = 3
diverse = 1

[llm]
endpoints = {endpoints:?}
model = {llm_model:?}
max_in_flight = 4
follow_ups = {follow_ups:?}
prompts_dir = {prompts:?}
{llm_extra}
"#,
        db = dir.join("t.db").display().to_string(),
        inputs = inputs.join(", "),
        rej = dir.join("rejects").display().to_string(),
        model = embed_model_dir().display().to_string(),
        ort = ort_dylib().display().to_string(),
        prompts = root().join("prompts").display().to_string(),
        llm_model = model,
        // The real llama.cpp server keeps prefixes per slot; the simulated one like vLLM.
        follow_ups = if model == "smollm2" {
            "sequential"
        } else {
            "concurrent"
        },
    );
    let p = dir.join("job.toml");
    std::fs::write(&p, text).unwrap();
    p
}

/// [`palate`] from async tests: on a blocking thread, so the test's own servers keep running.
pub async fn palate_async(args: &[&str]) -> (i32, String, String) {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        palate(&args)
    })
    .await
    .unwrap()
}

/// Runs the palate binary; returns (exit code, stdout, stderr).
pub fn palate(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_palate"))
        .args(args)
        .current_dir(root())
        .env("RUST_LOG", "palate=info")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// One restaurant's plan over `texts` (reviews `r0`, `r1`, …, all in the sample and the
/// selection), with the repository's prompts and the token estimate.
pub fn plan_of(texts: &[&str]) -> palate::plan::RestaurantPlan {
    use palate::plan::{BatchLimits, MaxTokens, Planner, Prompts, TokenCounter};
    let planner = Planner {
        prompts: Prompts::load(&root().join("prompts")).unwrap(),
        counter: TokenCounter::Estimate,
        limits: BatchLimits {
            reviews: 16,
            tokens: 2048,
        },
        max: MaxTokens {
            sentiment: 300,
            summary: 300,
            strengths: 300,
        },
        language: Default::default(),
    };
    let reviews: Vec<palate::domain::StoredReview> = (texts.iter().enumerate())
        .map(|(i, t)| palate::domain::StoredReview {
            review_id: format!("r{i}"),
            text: t.to_string(),
            content_hash: String::new(),
            lang: None,
            rating: None,
        })
        .collect();
    planner.plan("r", &reviews, &reviews)
}

/// A simulated server whose steps take `step_ms` (plus a little per token and sequence), with
/// `faults`.
pub async fn sim(step_ms: f64, faults: palate::sim::FaultPlan) -> palate::sim::SimServer {
    use palate::sim::{EngineConfig, LatencyModel, SimConfig, SimServer};
    let engine = EngineConfig {
        latency: LatencyModel {
            step_ms,
            token_ms: 0.0005,
            seq_ms: 0.01,
            ..LatencyModel::constant(0.0)
        },
        ..EngineConfig::default()
    };
    let cfg = SimConfig {
        engine,
        models: vec!["sim".into()],
        faults,
        ..SimConfig::default()
    };
    SimServer::start(cfg).await.unwrap()
}
