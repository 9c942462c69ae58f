//! The deployment files people copy (`deploy/`), held to palate so that they cannot drift from
//! it: the compose services and the vLLM flags palate relies on, the Kubernetes Indexed Job's
//! shard count against its `--shard` argument, and every job file there parsed by palate's own
//! `JobFile`, where an unknown key is an error. Where Docker Compose is installed,
//! `docker compose config` validates the compose file too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use serde_norway::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn compose() -> Value {
    let path = root().join("deploy/docker-compose.yml");
    serde_norway::from_str(&read(&path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every YAML document of `deploy/k8s/*.yaml`, with the file it came from.
fn k8s_documents() -> Vec<(String, Value)> {
    let dir = root().join("deploy/k8s");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    let mut docs = Vec::new();
    for file in files {
        let text = read(&file);
        for doc in serde_norway::Deserializer::from_str(&text) {
            let value =
                Value::deserialize(doc).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            if !value.is_null() {
                docs.push((file.display().to_string(), value));
            }
        }
    }
    docs
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => String::new(),
        other => panic!("expected a scalar, got {other:?}"),
    }
}

/// A command line as words: a list as is, a string (`sh -c '…'` included) split at whitespace.
fn words(values: &[&Value]) -> Vec<String> {
    let mut out = Vec::new();
    for v in values {
        let items: Vec<String> = match v {
            Value::Sequence(items) => items.iter().map(scalar).collect(),
            Value::Null => Vec::new(),
            other => vec![scalar(other)],
        };
        for item in items {
            out.extend(item.split_whitespace().map(str::to_owned));
        }
    }
    out
}

/// The value of flag `name`: `--name value` or `--name=value`.
fn flag<'a>(words: &'a [String], name: &str) -> Option<&'a str> {
    let with_eq = format!("{name}=");
    words.iter().enumerate().find_map(|(i, w)| {
        if w == name {
            words.get(i + 1).map(String::as_str)
        } else {
            w.strip_prefix(&with_eq)
        }
    })
}

fn runs_palate_run(words: &[String]) -> bool {
    words
        .windows(2)
        .any(|w| w[0].trim_matches(['\'', '"']).ends_with("palate") && w[1] == "run")
}

/// (source, target) of each of a compose service's volumes, short or long syntax.
fn volumes(service: &Value) -> Vec<(String, String)> {
    let Some(list) = service["volumes"].as_sequence() else {
        return Vec::new();
    };
    list.iter()
        .map(|v| match v {
            Value::String(s) => {
                // A source like `${VAR:-./dir}` has a `:` of its own.
                let from = if s.starts_with("${") {
                    s.find('}').map_or(0, |i| i + 1)
                } else {
                    0
                };
                let sep = from + s[from..].find(':').expect("SOURCE:TARGET");
                let target = s[sep + 1..].split(':').next().unwrap_or_default();
                (s[..sep].to_owned(), target.to_owned())
            }
            long => (scalar(&long["source"]), scalar(&long["target"])),
        })
        .collect()
}

/// The host of a URL such as `http://vllm:8000/v1` or `mysql://u:p@mariadb:3306/db`.
fn host(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    rest.split([':', '/']).next().unwrap_or_default()
}

#[test]
fn compose_runs_vllm_with_the_flags_palate_relies_on() {
    let c = compose();
    for s in ["vllm", "qdrant", "mariadb", "palate"] {
        assert!(c["services"].get(s).is_some(), "service {s} is missing");
    }
    let vllm = &c["services"]["vllm"];
    let cmd = words(&[&vllm["entrypoint"], &vllm["command"]]);
    let has = |f: &str| cmd.iter().any(|w| w == f);
    assert!(has("--enable-prefix-caching"), "{cmd:?}");
    assert_eq!(
        flag(&cmd, "--scheduling-policy"),
        Some("priority"),
        "palate sends `priority`: {cmd:?}"
    );
    assert!(has("--enable-per-request-metrics"), "{cmd:?}");
    assert!(has("--enable-prompt-tokens-details"), "{cmd:?}");
    assert!(
        !has("--disable-log-stats"),
        "per-request metrics need stats"
    );
    for f in [
        "--gpu-memory-utilization",
        "--max-model-len",
        "--max-num-seqs",
        "--max-num-batched-tokens",
    ] {
        assert!(flag(&cmd, f).is_some(), "{f} is missing: {cmd:?}");
    }
    assert_eq!(vllm["restart"].as_str(), Some("unless-stopped"));
    let (cache, _) = volumes(vllm)
        .into_iter()
        .find(|(_, target)| target == "/root/.cache/huggingface")
        .expect("vllm has a volume for the model cache");
    assert!(
        c["volumes"].get(cache.as_str()).is_some(),
        "the model cache {cache:?} is a named volume"
    );
    let gpus = vllm["deploy"]["resources"]["reservations"]["devices"].as_sequence();
    assert!(gpus.is_some_and(|d| !d.is_empty()), "vllm reserves a GPU");
    for s in ["qdrant", "mariadb"] {
        assert_eq!(
            c["services"][s]["restart"].as_str(),
            Some("unless-stopped"),
            "{s}"
        );
    }
}

#[test]
fn compose_runs_palate_once_after_the_servers_are_healthy() {
    let c = compose();
    let palate = &c["services"]["palate"];
    let cmd = words(&[&palate["entrypoint"], &palate["command"]]);
    assert!(runs_palate_run(&cmd), "{cmd:?}");
    assert_eq!(palate["restart"].as_str(), Some("no"), "a batch job");
    let job = flag(&cmd, "--job").expect("--job");
    assert!(
        volumes(palate)
            .iter()
            .any(|(src, dst)| src == "./nightly.toml" && dst == job),
        "deploy/nightly.toml is mounted at {job}"
    );
    let deps = palate["depends_on"]
        .as_mapping()
        .expect("depends_on with conditions");
    for (name, dep) in deps {
        let name = name.as_str().unwrap();
        assert_eq!(dep["condition"].as_str(), Some("service_healthy"), "{name}");
        assert!(
            !c["services"][name]["healthcheck"]["test"].is_null(),
            "{name} has a healthcheck"
        );
    }
    assert!(palate["environment"].get("PALATE_SINK_URL").is_some());
    let build = &palate["build"];
    let dockerfile = root()
        .join("deploy")
        .join(scalar(&build["context"]))
        .join(scalar(&build["dockerfile"]));
    assert!(dockerfile.is_file(), "{} exists", dockerfile.display());
}

#[test]
fn the_compose_job_file_uses_qdrant_mariadb_and_the_compose_services() {
    let text = read(&root().join("deploy/nightly.toml"));
    let t: toml::Table = toml::from_str(&text).unwrap();
    assert_eq!(t["index"]["backend"].as_str(), Some("qdrant"));
    assert_eq!(t["sink"]["kind"].as_str(), Some("mariadb"));
    for (section, key) in [("sink", "url"), ("index", "api_key"), ("llm", "api_key")] {
        assert!(
            t[section].get(key).is_none(),
            "[{section}] {key} is a secret: it comes from the environment, not the file"
        );
    }
    let c = compose();
    let mut urls: Vec<String> = t["llm"]["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap().to_owned())
        .collect();
    urls.push(t["index"]["url"].as_str().unwrap().to_owned());
    urls.push(scalar(
        &c["services"]["palate"]["environment"]["PALATE_SINK_URL"],
    ));
    for url in urls {
        let h = host(&url);
        assert!(
            c["services"].get(h).is_some(),
            "{url}: no compose service {h:?}"
        );
    }
}

#[test]
fn every_deploy_job_file_is_one_palate_accepts() {
    palate::config::JobFile::load(&root().join("deploy/nightly.toml"))
        .unwrap_or_else(|e| panic!("{e}"));
    let mut found = 0;
    for (file, doc) in k8s_documents() {
        if doc["kind"].as_str() != Some("ConfigMap") {
            continue;
        }
        for (key, text) in doc["data"].as_mapping().into_iter().flatten() {
            let key = key.as_str().unwrap();
            if key.ends_with(".toml") {
                toml::from_str::<palate::config::JobFile>(text.as_str().unwrap())
                    .unwrap_or_else(|e| panic!("{file}, ConfigMap key {key}: {e}"));
                found += 1;
            }
        }
    }
    assert!(found > 0, "deploy/k8s has a ConfigMap with the job file");
}

#[test]
fn the_indexed_job_runs_as_many_shards_as_it_has_completions() {
    let docs = k8s_documents();
    let mut jobs = 0;
    for (file, doc) in &docs {
        let spec = match doc["kind"].as_str() {
            Some("Job") => &doc["spec"],
            Some("CronJob") => &doc["spec"]["jobTemplate"]["spec"],
            _ => continue,
        };
        jobs += 1;
        assert_eq!(spec["completionMode"].as_str(), Some("Indexed"), "{file}");
        let completions = spec["completions"].as_u64().expect("completions");
        let parallelism = spec["parallelism"].as_u64().unwrap_or(completions);
        assert!(parallelism <= completions, "{file}");
        let pod = &spec["template"]["spec"];
        if spec.get("backoffLimitPerIndex").is_some() || spec.get("podFailurePolicy").is_some() {
            assert_eq!(
                pod["restartPolicy"].as_str(),
                Some("Never"),
                "{file}: Kubernetes requires it with backoffLimitPerIndex or podFailurePolicy"
            );
        }
        let sharded: Vec<&Value> = pod["containers"]
            .as_sequence()
            .expect("containers")
            .iter()
            .filter(|c| check_shard_container(file, c, completions))
            .collect();
        assert_eq!(
            sharded.len(),
            1,
            "{file}: one container runs palate run --shard"
        );
    }
    assert!(jobs > 0, "deploy/k8s has a Job or CronJob");
}

/// For a container that runs `palate run --shard …`: its shard count is `completions`, and so is
/// the `-of-N` of a work folder named after the index. False for any other container.
fn check_shard_container(file: &str, c: &Value, completions: u64) -> bool {
    let cmd = words(&[&c["command"], &c["args"]]);
    let Some(shard) = flag(&cmd, "--shard") else {
        return false;
    };
    assert!(runs_palate_run(&cmd), "{file}: {cmd:?}");
    let (index, n) = shard.rsplit_once('/').expect("--shard INDEX/N");
    assert!(
        index.contains("$(JOB_COMPLETION_INDEX)") || index.contains("${JOB_COMPLETION_INDEX}"),
        "{file}: --shard {shard} takes the pod's JOB_COMPLETION_INDEX"
    );
    let n: u64 = n
        .trim_matches(['\'', '"'])
        .parse()
        .expect("--shard INDEX/N");
    assert_eq!(
        n, completions,
        "{file}: --shard {shard} against completions"
    );
    for m in c["volumeMounts"].as_sequence().into_iter().flatten() {
        let expr = m["subPathExpr"].as_str().unwrap_or_default();
        if let Some((_, of)) = expr.rsplit_once("-of-") {
            assert_eq!(
                of.parse::<u64>().ok(),
                Some(n),
                "{file}: subPathExpr {expr}"
            );
        }
    }
    true
}

#[test]
fn docker_compose_accepts_the_compose_file() {
    let available = Command::new("docker")
        .args(["compose", "version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !available {
        println!("docker compose not available: checked the YAML only");
        return;
    }
    let out = Command::new("docker")
        .args(["compose", "-f", "deploy/docker-compose.yml", "config", "-q"])
        .current_dir(root())
        .env("PALATE_DB_PASSWORD", "x")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "docker compose config: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
