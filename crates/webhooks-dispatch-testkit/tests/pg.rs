use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use tokio_postgres::{Client, NoTls};
use webhooks_dispatch_testkit::pg::{fresh_database, shared_server, ClusterOptions, PgCluster};

async fn connect(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.unwrap();
    tokio::spawn(connection);
    client
}

#[tokio::test]
async fn fresh_databases_are_isolated() {
    let a = fresh_database().await;
    let b = fresh_database().await;
    assert_ne!(a, b);
    assert!(a.contains(&format!("/wdt_{}_", std::process::id())), "{a}");

    let a = connect(&a).await;
    let b = connect(&b).await;
    a.batch_execute("CREATE TABLE only_in_a (id int)").await.unwrap();
    let in_a: Option<String> = a
        .query_one("SELECT to_regclass('only_in_a')::text", &[])
        .await
        .unwrap()
        .get(0);
    let in_b: Option<String> = b
        .query_one("SELECT to_regclass('only_in_a')::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(in_a.as_deref(), Some("only_in_a"));
    assert_eq!(in_b, None);
}

// Each test has its own runtime; the shared server must serve them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_callers_share_one_server() {
    let urls = futures_join(8).await;
    let server = shared_server();
    if let Some(port) = server.port() {
        for url in &urls {
            assert!(url.contains(&format!(":{port}/")), "{url}");
        }
    }
    let mut names: Vec<_> = urls.iter().map(|u| u.rsplit('/').next().unwrap()).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 8);
    let client = connect(&urls[7]).await;
    let one: i32 = client.query_one("SELECT 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);
}

async fn futures_join(n: usize) -> Vec<String> {
    let tasks: Vec<_> = (0..n).map(|_| tokio::spawn(fresh_database())).collect();
    let mut urls = Vec::new();
    for task in tasks {
        urls.push(task.await.unwrap());
    }
    urls
}

#[tokio::test]
async fn owned_cluster_is_removed_on_drop() {
    let cluster = PgCluster::start(ClusterOptions {
        durable: true,
        max_connections: 20,
        extra_settings: vec![("application_name".into(), "testkit".into())],
    })
    .unwrap();
    let dir = cluster.dir().to_owned();
    let port = cluster.port();
    assert!(dir.join("data").is_dir());

    let client = connect(&cluster.admin_url()).await;
    let fsync: String = client.query_one("SHOW fsync", &[]).await.unwrap().get(0);
    let max: String = client
        .query_one("SHOW max_connections", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!((fsync.as_str(), max.as_str()), ("on", "20"));
    drop(client);

    drop(cluster);
    assert!(!dir.exists(), "{} still exists", dir.display());
    let addr = ([127, 0, 0, 1], port).into();
    assert!(TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err());
}

#[test]
fn test_cluster_settings_are_fast() {
    let cluster = PgCluster::start(ClusterOptions::default()).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = connect(&cluster.admin_url()).await;
        for (setting, want) in [
            ("fsync", "off"),
            ("synchronous_commit", "off"),
            ("full_page_writes", "off"),
            ("max_connections", "300"),
        ] {
            let got: String = client
                .query_one(&format!("SHOW {setting}"), &[])
                .await
                .unwrap()
                .get(0);
            assert_eq!(got, want, "{setting}");
        }
    });
}

/// Set in the child process of `a_remote_database_url_is_refused`.
const REFUSAL_CHILD: &str = "WDT_REFUSAL_CHILD";

// DATABASE_URL is process-wide and read once, so the refusal is observed in a child process: setting it here
// would hand the remote URL to every other test of this binary.
#[test]
fn a_remote_database_url_is_refused() {
    let output = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "shared_server_in_refusal_child",
            "--ignored",
            "--nocapture",
        ])
        .env(REFUSAL_CHILD, "1")
        .env("DATABASE_URL", "postgres://app:hunter2@db.example.com:5432/prod")
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&output.stdout) + String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{printed}");
    for expected in [
        "DATABASE_URL refused: postgres://app:***@db.example.com:5432/prod names host \"db.example.com\"",
        "127.0.0.0/8, ::1, localhost, or a Unix-socket directory",
    ] {
        assert!(printed.contains(expected), "{expected:?} not in:\n{printed}");
    }
    assert!(!printed.contains("hunter2"), "{printed}");
}

#[test]
#[ignore = "run by a_remote_database_url_is_refused in a child process with a remote DATABASE_URL"]
fn shared_server_in_refusal_child() {
    if std::env::var_os(REFUSAL_CHILD).is_some() {
        shared_server();
    }
}
