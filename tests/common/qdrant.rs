//! A real Qdrant server for the index tests: `QDRANT_URL` (its gRPC address) when set, else the
//! server build in `../shared/tools/qdrant/` started on free ports with a temporary storage
//! folder and killed on drop. Neither: `None`, after one "skipped" line.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One server starts at a time: on a new machine the first start unpacks the binary, and
/// start.sh unpacks through one temporary file, so two first starts at once (tests run in
/// parallel) could leave one of them running a half-written binary that never answers.
static STARTING: Mutex<()> = Mutex::new(());

pub struct QdrantServer {
    child: Option<Child>,
    /// gRPC, as palate's `[index] url` takes it.
    pub url: String,
    _dir: Option<tempfile::TempDir>,
}

fn start_script() -> PathBuf {
    super::root().join("../shared/tools/qdrant/start.sh")
}

impl QdrantServer {
    pub fn start() -> Option<Self> {
        if let Ok(url) = std::env::var("QDRANT_URL") {
            return Some(Self {
                child: None,
                url,
                _dir: None,
            });
        }
        let script = start_script();
        if !script.exists() {
            println!(
                "skipped: no Qdrant server (set QDRANT_URL, or provide {})",
                script.display()
            );
            return None;
        }
        let _one_at_a_time = STARTING.lock().unwrap_or_else(|e| e.into_inner());
        let dir = tempfile::tempdir().unwrap();
        let (http, grpc) = (super::free_port(), super::free_port());
        let log = std::fs::File::create(dir.path().join("qdrant.log")).unwrap();
        let child = Command::new("bash")
            .arg(&script)
            .arg(dir.path())
            .arg(http.to_string())
            .arg(grpc.to_string())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let server = Self {
            child: Some(child),
            url: format!("http://127.0.0.1:{grpc}"),
            _dir: Some(dir),
        };
        // The first start unpacks the binary (a few seconds).
        let ready = format!("http://127.0.0.1:{http}/readyz");
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(120) {
            let ok = Command::new("curl")
                .args(["-sf", "-m", "2", &ready])
                .output()
                .is_ok_and(|o| o.status.success());
            if ok {
                return Some(server);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("qdrant did not become ready at {ready}");
    }
}

impl Drop for QdrantServer {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            // start.sh execs the server, so the child is the server itself.
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
