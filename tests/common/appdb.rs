//! The app's database for the sink tests. Servers: a MariaDB and a PostgreSQL of the test's
//! own, each on a free port with a temporary data folder (never the system service), stopped by
//! the test for an outage, started again on the same port and data, and killed on drop. MariaDB
//! runs as root (`mariadb-install-db`, `mariadbd --user=root`), PostgreSQL as `postgres`
//! (`initdb`, `pg_ctl` through `runuser`, trusting local connections). Without the server
//! packages a test prints one `skipped:` line and returns; `scripts/test.sh` installs them and
//! sets `PALATE_REQUIRE_APPDB`, under which a missing server fails the test instead. [`app`]
//! reads the app's tables through sqlx, for the assertions.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use palate::sink::SinkKind;
use tempfile::TempDir;

/// How long a server may take to accept connections (a busy 2-core machine).
const READY_WITHIN: Duration = Duration::from_secs(60);

/// The app user's password in the MariaDB instance (PostgreSQL trusts local connections).
pub const MARIADB_PASSWORD: &str = "s3cret-pal4te-pw";

/// `name` on the PATH or in the folders Debian puts server binaries in.
fn binary(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    (std::env::split_paths(&path))
        .chain(["/usr/sbin", "/usr/bin", "/usr/local/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// `None` after the one `skipped:` line, or a panic under `PALATE_REQUIRE_APPDB`.
fn missing<T>(what: &str, package: &str) -> Option<T> {
    let line = format!("skipped: no {what} server (install {package}; scripts/test.sh does)");
    if std::env::var_os("PALATE_REQUIRE_APPDB").is_some() {
        panic!("{line}, and PALATE_REQUIRE_APPDB is set");
    }
    println!("{line}");
    None
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Runs `cmd`, panicking with its output when it fails.
fn check(cmd: &mut Command, what: &str) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    assert!(
        out.status.success(),
        "{what}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn log_of(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| format!("({}: {e})", p.display()))
}

/// A MariaDB server of the test's own, run as root with `--user=root`.
pub struct MariaDb {
    dir: TempDir,
    port: u16,
    mariadbd: PathBuf,
    client: PathBuf,
    child: Option<Child>,
}

impl MariaDb {
    /// A fresh server with database `palate` and user `palate`, or `None` without MariaDB.
    pub fn start() -> Option<Self> {
        let (Some(mariadbd), Some(install), Some(client)) = (
            binary("mariadbd"),
            binary("mariadb-install-db"),
            binary("mariadb"),
        ) else {
            return missing("MariaDB", "mariadb-server");
        };
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        // Temporary tables in a folder of its own: two installs at once in the shared /tmp
        // failed once ("Could not remove temporary table ... Unknown table 'mysql.tmp_user_sys'").
        let tmp = dir.path().join("tmp");
        std::fs::create_dir(&tmp).unwrap();
        let mut cmd = Command::new(install);
        cmd.arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--tmpdir={}", tmp.display()))
            .args(["--auth-root-authentication-method=normal", "--skip-test-db"]);
        if is_root() {
            cmd.arg("--user=root");
        }
        check(&mut cmd, "mariadb-install-db");
        let mut db = Self {
            dir,
            port: super::free_port(),
            mariadbd,
            client,
            child: None,
        };
        db.start_again();
        db.sql(&format!(
            "CREATE DATABASE palate; CREATE USER 'palate'@'%' IDENTIFIED BY '{MARIADB_PASSWORD}';
             GRANT ALL ON palate.* TO 'palate'@'%';"
        ));
        Some(db)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!(
            "mysql://palate:{MARIADB_PASSWORD}@127.0.0.1:{}/palate",
            self.port
        )
    }

    /// Starts the server on its port and data folder (again, after [`MariaDb::stop`]) and waits
    /// until it answers.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "MariaDB is already running");
        let d = self.dir.path();
        let mut cmd = Command::new(&self.mariadbd);
        cmd.arg("--no-defaults")
            .arg(format!("--datadir={}", d.join("data").display()))
            .arg(format!("--tmpdir={}", d.join("tmp").display()));
        if is_root() {
            cmd.arg("--user=root");
        }
        let child = cmd
            .arg(format!("--port={}", self.port))
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--socket={}", d.join("sock").display()))
            .arg(format!("--pid-file={}", d.join("pid").display()))
            .arg(format!("--log-error={}", d.join("err.log").display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let t = Instant::now();
        loop {
            let up = self
                .client()
                .args(["-e", "SELECT 1"])
                .output()
                .is_ok_and(|o| o.status.success());
            if up {
                return;
            }
            let exited = self.child.as_mut().unwrap().try_wait().unwrap();
            assert!(
                exited.is_none() && t.elapsed() < READY_WITHIN,
                "MariaDB did not start on port {} ({exited:?}):\n{}",
                self.port,
                log_of(&d.join("err.log"))
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the server (SIGTERM, as the notes do it) and waits until it has exited: from now
    /// on connections to its port are refused.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let t = Instant::now();
        while child.try_wait().unwrap().is_none() {
            if t.elapsed() > Duration::from_secs(30) {
                let _ = child.kill();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The `mariadb` client as root over TCP, batch mode without column names.
    fn client(&self) -> Command {
        let mut c = Command::new(&self.client);
        c.args(["-h", "127.0.0.1", "-P", &self.port.to_string()])
            .args(["-u", "root", "-N", "-B", "--connect-timeout=2"]);
        c
    }

    /// Runs `sql` as root; its output (tab-separated rows).
    pub fn sql(&self, sql: &str) -> String {
        check(
            self.client().args(["-e", sql]),
            &format!("mariadb -e {sql:?}"),
        )
    }

    /// [`MariaDb::sql`], `None` when it fails (a table not made yet, the server down).
    pub fn try_sql(&self, sql: &str) -> Option<String> {
        let out = self.client().args(["-e", sql]).output().ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A PostgreSQL server of the test's own, run as the `postgres` user (it refuses root) on a
/// folder that user owns, trusting local connections, with `palate` its superuser.
pub struct Postgres {
    dir: TempDir,
    port: u16,
    bin: PathBuf,
    running: bool,
}

impl Postgres {
    /// A fresh server, or `None` without PostgreSQL.
    pub fn start() -> Option<Self> {
        let Some(bin) = Self::bin_dir() else {
            return missing("PostgreSQL", "postgresql");
        };
        let dir = tempfile::tempdir().unwrap();
        if is_root() {
            check(
                Command::new("chown").arg("postgres").arg(dir.path()),
                "chown postgres",
            );
        }
        let mut pg = Self {
            dir,
            port: super::free_port(),
            bin,
            running: false,
        };
        let data = pg.data();
        check(
            pg.as_postgres("initdb")
                .arg("-D")
                .arg(&data)
                .args(["-A", "trust", "-U", "palate"]),
            "initdb",
        );
        pg.start_again();
        Some(pg)
    }

    /// The newest `/usr/lib/postgresql/<version>/bin` with `initdb` and `pg_ctl`.
    fn bin_dir() -> Option<PathBuf> {
        let mut dirs: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let v = e.file_name().to_str()?.parse().ok()?;
                let bin = e.path().join("bin");
                (bin.join("initdb").is_file() && bin.join("pg_ctl").is_file()).then_some((v, bin))
            })
            .collect();
        dirs.sort();
        dirs.pop().map(|(_, bin)| bin)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("pg")
    }

    /// `program` of the server's version, run as `postgres` when we are root.
    fn as_postgres(&self, program: &str) -> Command {
        let program = self.bin.join(program);
        if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("postgres://palate@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the server on its port and data folder (again, after [`Postgres::stop`]);
    /// `pg_ctl -w` returns once it accepts connections.
    pub fn start_again(&mut self) {
        assert!(!self.running, "PostgreSQL is already running");
        let d = self.dir.path();
        let log = d.join("pg.log");
        let out = self
            .as_postgres("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(&log)
            .arg("-o")
            .arg(format!(
                "-p {} -k {} -c listen_addresses=127.0.0.1",
                self.port,
                d.display()
            ))
            .args(["-w", "-t", &READY_WITHIN.as_secs().to_string(), "start"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "PostgreSQL did not start on port {}: {}\n{}",
            self.port,
            String::from_utf8_lossy(&out.stderr),
            log_of(&log)
        );
        self.running = true;
    }

    /// Stops the server (`pg_ctl -m fast stop`, which waits for it): from now on connections to
    /// its port are refused.
    pub fn stop(&mut self) {
        self.pg_stop("fast");
    }

    fn pg_stop(&mut self, mode: &str) {
        if !std::mem::take(&mut self.running) {
            return;
        }
        let _ = self
            .as_postgres("pg_ctl")
            .arg("-D")
            .arg(self.data())
            .args(["-m", mode, "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.pg_stop("immediate");
    }
}

/// Either server, for a suite that runs against both.
pub enum AppServer {
    My(MariaDb),
    Pg(Postgres),
}

impl AppServer {
    pub fn kind(&self) -> SinkKind {
        match self {
            AppServer::My(_) => SinkKind::Mariadb,
            AppServer::Pg(_) => SinkKind::Postgres,
        }
    }

    pub fn url(&self) -> String {
        match self {
            AppServer::My(s) => s.url(),
            AppServer::Pg(s) => s.url(),
        }
    }

    pub fn port(&self) -> u16 {
        match self {
            AppServer::My(s) => s.port(),
            AppServer::Pg(s) => s.port(),
        }
    }

    pub fn stop(&mut self) {
        match self {
            AppServer::My(s) => s.stop(),
            AppServer::Pg(s) => s.stop(),
        }
    }

    pub fn start_again(&mut self) {
        match self {
            AppServer::My(s) => s.start_again(),
            AppServer::Pg(s) => s.start_again(),
        }
    }
}

/// What the app reads from its database, through sqlx as the app would (with `appdb` built).
#[cfg(feature = "appdb")]
pub mod app {
    use chrono::{DateTime, Utc};
    use palate::sink::SinkKind;
    use serde_json::Value;
    use sqlx::mysql::{MySqlPool, MySqlPoolOptions};
    use sqlx::postgres::{PgPool, PgPoolOptions};
    use sqlx::Row;
    use std::time::Duration;

    /// A result as the app's table and SQLite's `current_results` hold it.
    #[derive(Debug, Clone, PartialEq)]
    pub struct Current {
        pub kind: String,
        pub result: Value,
        pub model: String,
        pub prompt_version: String,
        pub input_hash: String,
        pub run_id: i64,
        pub created_at: DateTime<Utc>,
    }

    #[derive(Debug, Clone, PartialEq)]
    pub struct AppRow {
        pub current: Current,
        pub delivered_at: DateTime<Utc>,
    }

    /// A `palate_restaurants` row.
    #[derive(Debug, Clone, PartialEq)]
    pub struct AppSummary {
        pub run_id: i64,
        pub analysed_at: DateTime<Utc>,
        pub analyses_ok: i64,
        pub analyses_failed: i64,
        pub reviews_total: i64,
        pub reviews_selected: i64,
        pub requests: i64,
        pub requests_failed: i64,
        pub prompt_tokens: i64,
        pub completion_tokens: i64,
        pub ttft_p50_ms: Option<f64>,
        pub ttft_p95_ms: Option<f64>,
        pub goodput: Option<f64>,
        pub delivered_at: DateTime<Utc>,
    }

    /// The app's own connection to its database, for the assertions.
    pub enum App {
        My(MySqlPool),
        Pg(PgPool),
    }

    const RESULT_COLS: &str =
        "kind, result_json, model, prompt_version, input_hash, run_id, created_at, delivered_at";
    const SUMMARY_COLS: &str = "run_id, analysed_at, analyses_ok, analyses_failed, reviews_total,
        reviews_selected, requests, requests_failed, prompt_tokens, completion_tokens, ttft_p50_ms,
        ttft_p95_ms, goodput, delivered_at";

    impl App {
        pub async fn connect(kind: SinkKind, url: &str) -> Self {
            let t = Duration::from_secs(10);
            match kind {
                SinkKind::Mariadb => App::My(
                    MySqlPoolOptions::new()
                        .acquire_timeout(t)
                        .connect(url)
                        .await
                        .unwrap(),
                ),
                SinkKind::Postgres => App::Pg(
                    PgPoolOptions::new()
                        .acquire_timeout(t)
                        .connect(url)
                        .await
                        .unwrap(),
                ),
                SinkKind::Sqlite => unreachable!(),
            }
        }

        pub async fn results(&self, restaurant_id: &str) -> Vec<AppRow> {
            let row = |kind: String, json: String, rest: (String, String, String, i64)| Current {
                kind,
                result: serde_json::from_str(&json).unwrap(),
                model: rest.0,
                prompt_version: rest.1,
                input_hash: rest.2,
                run_id: rest.3,
                created_at: DateTime::<Utc>::MIN_UTC,
            };
            match self {
                App::My(p) => sqlx::query(&format!(
                    "SELECT {RESULT_COLS} FROM palate_results WHERE restaurant_id = ? ORDER BY kind"
                ))
                .bind(restaurant_id)
                .fetch_all(p)
                .await
                .unwrap()
                .iter()
                .map(|r| AppRow {
                    current: Current {
                        created_at: r.get::<chrono::NaiveDateTime, _>(6).and_utc(),
                        ..row(r.get(0), r.get(1), (r.get(2), r.get(3), r.get(4), r.get(5)))
                    },
                    delivered_at: r.get::<chrono::NaiveDateTime, _>(7).and_utc(),
                })
                .collect(),
                App::Pg(p) => sqlx::query(&format!(
                    "SELECT {} FROM palate_results WHERE restaurant_id = $1 ORDER BY kind",
                    RESULT_COLS.replace("result_json", "result_json::text")
                ))
                .bind(restaurant_id)
                .fetch_all(p)
                .await
                .unwrap()
                .iter()
                .map(|r| AppRow {
                    current: Current {
                        created_at: r.get(6),
                        ..row(r.get(0), r.get(1), (r.get(2), r.get(3), r.get(4), r.get(5)))
                    },
                    delivered_at: r.get(7),
                })
                .collect(),
            }
        }

        pub async fn summary(&self, restaurant_id: &str) -> Option<AppSummary> {
            macro_rules! summary {
                ($r:expr, $time:expr) => {{
                    let r = $r;
                    let int = |i: usize| i64::from(r.get::<i32, _>(i));
                    AppSummary {
                        run_id: r.get(0),
                        analysed_at: $time(&r, 1),
                        analyses_ok: int(2),
                        analyses_failed: int(3),
                        reviews_total: int(4),
                        reviews_selected: int(5),
                        requests: int(6),
                        requests_failed: int(7),
                        prompt_tokens: r.get(8),
                        completion_tokens: r.get(9),
                        ttft_p50_ms: r.get(10),
                        ttft_p95_ms: r.get(11),
                        goodput: r.get(12),
                        delivered_at: $time(&r, 13),
                    }
                }};
            }
            match self {
                App::My(p) => sqlx::query(&format!(
                    "SELECT {SUMMARY_COLS} FROM palate_restaurants WHERE restaurant_id = ?"
                ))
                .bind(restaurant_id)
                .fetch_optional(p)
                .await
                .unwrap()
                .map(|r| {
                    summary!(r, |r: &sqlx::mysql::MySqlRow, i: usize| r
                        .get::<chrono::NaiveDateTime, _>(i)
                        .and_utc())
                }),
                App::Pg(p) => sqlx::query(&format!(
                    "SELECT {SUMMARY_COLS} FROM palate_restaurants WHERE restaurant_id = $1"
                ))
                .bind(restaurant_id)
                .fetch_optional(p)
                .await
                .unwrap()
                .map(|r| summary!(r, |r: &sqlx::postgres::PgRow, i: usize| r.get(i))),
            }
        }

        /// Every restaurant in `palate_restaurants`, sorted.
        pub async fn restaurants(&self) -> Vec<String> {
            let sql = "SELECT restaurant_id FROM palate_restaurants ORDER BY restaurant_id";
            match self {
                App::My(p) => sqlx::query_scalar(sql).fetch_all(p).await.unwrap(),
                App::Pg(p) => sqlx::query_scalar(sql).fetch_all(p).await.unwrap(),
            }
        }

        /// `_sqlx_migrations`: (version, success) per row.
        pub async fn migrations(&self) -> Vec<(i64, bool)> {
            let sql = "SELECT version, success FROM _sqlx_migrations ORDER BY version";
            match self {
                App::My(p) => sqlx::query_as(sql).fetch_all(p).await.unwrap(),
                App::Pg(p) => sqlx::query_as(sql).fetch_all(p).await.unwrap(),
            }
        }

        /// Holds a lock on the restaurant's result rows, as an app's long transaction would, until
        /// the returned transaction is dropped.
        pub async fn lock_results(&self, restaurant_id: &str) -> Locked {
            match self {
                App::My(p) => {
                    let mut tx = p.begin().await.unwrap();
                    sqlx::query("SELECT * FROM palate_results WHERE restaurant_id = ? FOR UPDATE")
                        .bind(restaurant_id)
                        .fetch_all(&mut *tx)
                        .await
                        .unwrap();
                    Locked::My(tx)
                }
                App::Pg(p) => {
                    let mut tx = p.begin().await.unwrap();
                    sqlx::query("SELECT * FROM palate_results WHERE restaurant_id = $1 FOR UPDATE")
                        .bind(restaurant_id)
                        .fetch_all(&mut *tx)
                        .await
                        .unwrap();
                    Locked::Pg(tx)
                }
            }
        }
    }

    pub enum Locked {
        My(sqlx::Transaction<'static, sqlx::MySql>),
        Pg(sqlx::Transaction<'static, sqlx::Postgres>),
    }

    impl Locked {
        pub async fn release(self) {
            match self {
                Locked::My(tx) => tx.rollback().await.unwrap(),
                Locked::Pg(tx) => tx.rollback().await.unwrap(),
            }
        }
    }
}
