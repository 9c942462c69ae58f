//! The parts on this machine: the embedding model and ONNX Runtime, the vector index, the app
//! database, the work database (schema, integrity, lock holder, runs left `running`), free disk
//! where the database and the rejects go, and each GPU through NVML.

use std::path::{Path, PathBuf};
use std::time::Instant;

use super::{Check, Status};
use crate::config::Config;
use crate::embed::EmbedConfig;
use crate::index::IndexConfig;
use crate::sink::SinkConfig;
use crate::store::health::Health;

/// Loads the embedder and embeds one text, as the first run of the day would.
pub async fn embedding(cfg: &EmbedConfig) -> Check {
    let t0 = Instant::now();
    let name = "embedding model";
    let embedder = match crate::embed::load(cfg).await {
        Ok(e) => e,
        Err(e) => return Check::new(name, Status::Fail, e.to_string()).took(t0),
    };
    match embedder.embed(vec!["맛있어요. Tasty.".into()]).await {
        Ok(v) => Check::new(
            name,
            Status::Ok,
            format!(
                "{} loaded; {} dimensions",
                embedder.model_id(),
                v.first().map_or(0, Vec::len)
            ),
        )
        .took(t0),
        Err(e) => Check::new(
            name,
            Status::Fail,
            format!("loaded, but embedding failed: {e}"),
        )
        .took(t0),
    }
}

/// Schema version, integrity, the lock's holder and runs left `running`.
pub fn database(path: &Path) -> Vec<Check> {
    let t0 = Instant::now();
    if !path.exists() {
        return vec![Check::new(
            "database",
            Status::Warn,
            format!("{} does not exist yet", path.display()),
        )
        .fix("the first `palate ingest` or `palate run` creates it; check [job] database if it should exist")];
    }
    let h = match crate::store::health::health(path) {
        Ok(h) => h,
        Err(e) => {
            return vec![Check::new("database", Status::Fail, e.to_string())
                .fix("restore the database from a backup, or move it aside to start afresh")
                .took(t0)]
        }
    };
    let holder = crate::store::health::lock_holder(path);
    let lock = match &holder {
        Some(pid) => Check::new(
            "database lock",
            Status::Ok,
            format!("held by process {pid} (a run in progress)"),
        ),
        None => Check::new("database lock", Status::Ok, "free"),
    };
    let integrity = if h.integrity == "ok" {
        Check::new("database integrity", Status::Ok, "quick_check ok")
    } else {
        Check::new("database integrity", Status::Fail, h.integrity.clone())
            .fix("restore from a backup; `sqlite3 DB .recover` salvages what it can")
    };
    let (schema, runs) = (schema(&h), left_running(&h, holder));
    [schema, integrity, lock, runs]
        .into_iter()
        .map(|c| c.took(t0))
        .collect()
}

fn schema(h: &Health) -> Check {
    let name = "database schema";
    match h.schema_version.cmp(&h.expected_version) {
        std::cmp::Ordering::Equal => {
            Check::new(name, Status::Ok, format!("version {}", h.schema_version))
        }
        std::cmp::Ordering::Less => Check::new(
            name,
            Status::Warn,
            format!(
                "version {} of {}: the next run migrates it",
                h.schema_version, h.expected_version
            ),
        ),
        std::cmp::Ordering::Greater => Check::new(
            name,
            Status::Fail,
            format!(
                "version {} is newer than this palate's {}",
                h.schema_version, h.expected_version
            ),
        )
        .fix("run the palate that wrote it (a newer release)"),
    }
}

/// Runs marked `running`: one in progress if a process holds the lock, else left by a killed one.
fn left_running(h: &Health, holder: Option<u32>) -> Check {
    let name = "runs left running";
    match (h.running.as_slice(), holder) {
        ([], _) => Check::new(name, Status::Ok, "none"),
        (r, Some(_)) => Check::new(
            name,
            Status::Ok,
            format!("run {} in progress", r[r.len() - 1].0),
        ),
        (r, None) => Check::new(
            name,
            Status::Warn,
            format!(
                "{} marked running with no process holding the lock: {}",
                r.len(),
                r.iter()
                    .map(|(id, at)| format!("run {id} from {at}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
        .fix("a killed run; the next `palate run` marks it failed and resumes its work"),
    }
}

pub async fn index(cfg: &IndexConfig) -> Check {
    let t0 = Instant::now();
    match crate::index::ping(cfg).await {
        Ok(what) => Check::new("vector index", Status::Ok, what).took(t0),
        Err(e) => Check::new("vector index", Status::Fail, e.to_string())
            .fix("start the Qdrant server, or set [index] backend = \"embedded\"")
            .took(t0),
    }
}

pub async fn sink(cfg: &SinkConfig) -> Check {
    let t0 = Instant::now();
    match crate::sink::ping(cfg).await {
        None => Check::new("app database", Status::Skip, "none configured ([sink] kind = \"sqlite\")"),
        Some(Ok(version)) => Check::new("app database", Status::Ok, format!("connected: {version}")).took(t0),
        Some(Err(e)) => Check::new("app database", Status::Fail, e.to_string())
            .fix("start the database, or correct sink.url / PALATE_SINK_URL; results stay queued until it answers")
            .took(t0),
    }
}

/// Free space where the database and the rejects go: under 1 GiB warns, under 100 MiB fails.
pub fn disk(cfg: &Config) -> Vec<Check> {
    let mut seen = Vec::new();
    let mut out = Vec::new();
    for (what, path) in [
        ("database", &cfg.job.database),
        ("rejects", &cfg.job.rejects_dir),
    ] {
        let dir = existing_ancestor(path);
        let Ok(st) = rustix::fs::statvfs(&dir) else {
            out.push(Check::new(
                format!("disk ({what})"),
                Status::Warn,
                format!("cannot stat {}", dir.display()),
            ));
            continue;
        };
        if seen.contains(&st.f_fsid) {
            continue;
        }
        seen.push(st.f_fsid);
        let free = st.f_bavail as f64 * st.f_frsize as f64;
        let gib = free / f64::from(1u32 << 30);
        let detail = format!("{gib:.1} GiB free at {}", dir.display());
        out.push(match free {
            f if f < 100.0 * 1024.0 * 1024.0 => {
                Check::new(format!("disk ({what})"), Status::Fail, detail)
                    .fix("free space: a run stops storing results when the disk is full")
            }
            f if f < f64::from(1u32 << 30) => {
                Check::new(format!("disk ({what})"), Status::Warn, detail)
                    .fix("free space before the catalogue grows")
            }
            _ => Check::new(format!("disk ({what})"), Status::Ok, detail),
        });
    }
    out
}

/// The folder `path` is or is in, or its nearest parent that exists (a database not created
/// yet).
fn existing_ancestor(path: &Path) -> PathBuf {
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    abs.ancestors()
        .find(|p| p.is_dir())
        .map_or_else(|| PathBuf::from("/"), Path::to_path_buf)
}

/// Each GPU: memory used, temperature, and throttling that slows it (thermal, power brake).
pub fn gpu() -> Vec<Check> {
    let t0 = Instant::now();
    let nvml = match nvml_wrapper::Nvml::init() {
        Ok(n) => n,
        Err(e) => {
            return vec![Check::new(
                "gpu",
                Status::Skip,
                format!("no NVML ({e}): no local NVIDIA GPU to check"),
            )]
        }
    };
    let n = nvml.device_count().unwrap_or(0);
    let mut out = Vec::new();
    for i in 0..n {
        out.push(match nvml.device_by_index(i) {
            Ok(d) => device(i, &d).took(t0),
            Err(_) => Check::new(format!("gpu {i}"), Status::Warn, "NVML cannot open it"),
        });
    }
    if out.is_empty() {
        out.push(Check::new(
            "gpu",
            Status::Skip,
            "NVML loaded but found no GPU",
        ));
    }
    out
}

/// One GPU's memory, temperature and the throttling that slows it.
fn device(i: u32, d: &nvml_wrapper::Device) -> Check {
    use nvml_wrapper::bitmasks::device::ThrottleReasons as T;
    use nvml_wrapper::enum_wrappers::device::TemperatureSensor;
    let name = format!("gpu {i}");
    let mem = d.memory_info().ok();
    let temp = d.temperature(TemperatureSensor::Gpu).ok();
    let slow = T::HW_SLOWDOWN
        | T::SW_THERMAL_SLOWDOWN
        | T::HW_THERMAL_SLOWDOWN
        | T::HW_POWER_BRAKE_SLOWDOWN;
    let throttled = d
        .current_throttle_reasons()
        .map(|r| r & slow)
        .unwrap_or(T::empty());
    let gib = |b: u64| b as f64 / f64::from(1u32 << 30);
    let detail = format!(
        "{}: memory {} · temperature {} · throttling {}",
        d.name().unwrap_or_default(),
        mem.map_or("-".into(), |m| format!(
            "{:.1} of {:.1} GiB",
            gib(m.used),
            gib(m.total)
        )),
        temp.map_or("-".into(), |t| format!("{t} °C")),
        if throttled.is_empty() {
            "none".into()
        } else {
            format!("{throttled:?}")
        }
    );
    if throttled.is_empty() {
        Check::new(name, Status::Ok, detail)
    } else {
        Check::new(name, Status::Warn, detail)
            .fix("the GPU slows itself (heat or power): check cooling and power limits")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_not_created_yet_is_a_warning_and_a_held_lock_is_seen() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("sub/none.db");
        let c = database(&db);
        assert_eq!((c.len(), c[0].status), (1, Status::Warn));
        assert_eq!(existing_ancestor(&db), dir.path());
        let db = dir.path().join("w.db");
        drop(crate::store::Db::open(&db).unwrap());
        let names = |c: &[Check]| {
            c.iter()
                .map(|c| (c.name.clone(), c.status))
                .collect::<Vec<_>>()
        };
        assert!(names(&database(&db)).iter().all(|(_, s)| *s == Status::Ok));
        let lock = crate::commands::db_lock(&db, crate::commands::Lock::Exclusive)
            .unwrap()
            .unwrap();
        let c = database(&db);
        assert_eq!(
            c[2].detail,
            format!("held by process {} (a run in progress)", std::process::id())
        );
        drop(lock);
    }
}
