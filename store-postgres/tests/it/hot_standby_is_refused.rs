//! The global order cannot be read safely on a hot standby (its lock table does not show the primary's appends in
//! flight). Against a real streaming replica that the test sets up itself: a throwaway primary (`initdb`), a
//! replica of it (`pg_basebackup -R`), both on free ports, both stopped and removed afterwards, even on failure.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use annals::{EventStore, ExpectedVersion, Position};
use annals_postgres::PostgresStore;

use crate::support::{event, eventually, stream};

const BIN: &str = "/usr/lib/postgresql/15/bin";

/// Runs a PostgreSQL program as the `postgres` OS user when the tests run as root (the server refuses root).
fn pg(program: &str) -> Command {
    let path = format!("{BIN}/{program}");
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0");
    if root {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--", &path]);
        command
    } else {
        Command::new(path)
    }
}

#[track_caller]
fn run(mut command: Command) {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(
        out.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A server in a temporary data directory, stopped and deleted when dropped.
struct Cluster {
    dir: PathBuf,
    port: u16,
}

impl Cluster {
    fn settings(&self) -> String {
        format!(
            "\nport = {}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\nfsync = off\n\
             hot_standby = on\nssl = off\n",
            self.port,
            self.dir.display()
        )
    }

    fn append_settings(&self, file: &str, extra: &str) {
        use std::io::Write;
        let mut conf = std::fs::OpenOptions::new()
            .append(true)
            .open(self.dir.join(file))
            .unwrap();
        conf.write_all(extra.as_bytes()).unwrap();
    }

    fn start(&self) {
        let mut start = pg("pg_ctl");
        start
            .arg("-D")
            .arg(&self.dir)
            .arg("-l")
            .arg(self.dir.join("server.log"))
            .args(["-w", "-t", "60", "start"]);
        run(start);
    }

    fn primary() -> Self {
        let cluster = Self {
            dir: std::env::temp_dir().join(format!("annals-primary-{}", uuid::Uuid::now_v7())),
            port: free_port(),
        };
        let mut init = pg("initdb");
        init.arg("-D")
            .arg(&cluster.dir)
            .args(["-U", "postgres", "-A", "trust", "--no-sync"]);
        run(init);
        cluster.append_settings("postgresql.conf", &cluster.settings());
        cluster.append_settings("pg_hba.conf", "\nhost replication all 127.0.0.1/32 trust\n");
        cluster.start();
        cluster
    }

    fn replica_of(primary: &Cluster) -> Self {
        let cluster = Self {
            dir: std::env::temp_dir().join(format!("annals-replica-{}", uuid::Uuid::now_v7())),
            port: free_port(),
        };
        let mut backup = pg("pg_basebackup");
        backup
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &primary.port.to_string(),
                "-U",
                "postgres",
            ])
            .arg("-D")
            .arg(&cluster.dir)
            .args(["-R", "-X", "stream", "-c", "fast"]);
        run(backup);
        cluster.append_settings("postgresql.auto.conf", &cluster.settings());
        cluster.start();
        cluster
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let mut stop = pg("pg_ctl");
        stop.arg("-D")
            .arg(&self.dir)
            .args(["-m", "immediate", "-w", "stop"]);
        let _ = stop.output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_the_global_order_on_a_hot_standby_is_refused() {
    let primary = Cluster::primary();
    let writer = PostgresStore::connect(&primary.url()).await.unwrap();
    writer.migrate().await.unwrap();
    let id = stream("order-1");
    writer
        .append(&id, ExpectedVersion::NoStream, vec![event(1), event(2)])
        .await
        .unwrap();
    let replica = Cluster::replica_of(&primary);
    let reader = PostgresStore::connect(&replica.url()).await.unwrap();
    eventually(
        "the replica has replayed the events",
        Duration::from_secs(60),
        || async {
            reader
                .load_stream(&id)
                .await
                .is_ok_and(|events| events.len() == 2)
        },
    )
    .await;
    let in_recovery: bool = sqlx::query_scalar("SELECT pg_is_in_recovery()")
        .fetch_one(reader.pool())
        .await
        .unwrap();
    assert!(in_recovery, "the replica is a hot standby");

    #[track_caller]
    fn refused<T: std::fmt::Debug>(what: &str, result: annals::Result<T>) {
        match result {
            Err(error @ annals::Error::Backend { .. }) => {
                let message = error.to_string();
                assert!(message.contains("hot standby"), "{what}: {message}");
            }
            other => panic!("{what} on a standby must be refused, got {other:?}"),
        }
    }
    refused("read_all", reader.read_all(Position::START, 10).await);
    refused(
        "visit_all",
        reader.visit_all(Position::START, &mut |_| Ok(())).await,
    );
    refused("head", reader.head().await);
    refused(
        "wait_for_events",
        reader
            .wait_for_events(Position::START, Duration::from_secs(1))
            .await,
    );
    // The SQL function for SQL clients refuses too.
    let sql = sqlx::query("SELECT * FROM annals.read_all(0, 10)")
        .fetch_all(reader.pool())
        .await;
    assert!(
        sql.as_ref()
            .is_err_and(|e| e.to_string().contains("hot standby")),
        "{sql:?}"
    );
    // Start-up checks name the problem and the fix.
    match reader.verify().await {
        Err(error @ annals_postgres::Error::Misconfigured { .. }) => {
            assert!(error.to_string().contains("pg_is_in_recovery()"), "{error}");
        }
        other => panic!("verify on a standby must refuse, got {other:?}"),
    }
    // The primary reads the same log fine.
    assert_eq!(writer.read_all(Position::START, 10).await.unwrap().len(), 2);
    reader.pool().close().await;
    writer.pool().close().await;
}
