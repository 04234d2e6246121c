use webhooks_dispatch::store::sqlx::SqlxConnection;
use webhooks_dispatch::{Dispatcher, NewEndpoint, NewEvent, NewMessage};

use crate::support::{bounded, deadpool_pool, Ctx, Engine};

const COUNT_OUTBOX: &str = "SELECT count(*) FROM webhooks_dispatch_outbox";
const COUNT_EVENTS: &str = "SELECT count(*) FROM webhooks_dispatch_events";

#[tokio::test]
async fn enqueue_inside_caller_transaction_sqlx_rolls_back_and_commits_with_it() {
    bounded(
        "enqueue_inside_caller_transaction_sqlx_rolls_back_and_commits_with_it",
        Engine::Sqlx,
        in_caller_transaction_sqlx_rolls_back_and_commits_with_it(),
    )
    .await
}

async fn in_caller_transaction_sqlx_rolls_back_and_commits_with_it() {
    let ctx = Ctx::new(Engine::Sqlx).await;
    let (ep, _) = ctx.endpoint(&ctx.dispatcher()).await;
    let pool = sqlx::PgPool::connect(&ctx.db_url).await.unwrap();
    let d = ctx.dispatcher();

    let mut tx = pool.begin().await.unwrap();
    let id = {
        let conn = SqlxConnection::new(&mut tx);
        let id = d
            .using(&conn)
            .dispatch(NewMessage::new(&ep, "a", 1))
            .await
            .unwrap()
            .message_id;
        // Visible inside the transaction ...
        assert!(d.using(&conn).message(&id).await.is_ok());
        id
    };
    // ... but not outside it until commit.
    assert_eq!(d.message(&id).await.unwrap_err().code(), "unknown_message");
    tx.rollback().await.unwrap();
    assert_eq!(
        ctx.scalar(COUNT_OUTBOX, &[]).await,
        0,
        "rolled back means no outbox row"
    );

    let mut tx = pool.begin().await.unwrap();
    let id = d
        .using(&SqlxConnection::new(&mut tx))
        .dispatch(NewMessage::new(&ep, "a", 1))
        .await
        .unwrap()
        .message_id;
    tx.commit().await.unwrap();
    assert_eq!(ctx.scalar(COUNT_OUTBOX, &[]).await, 1, "committed means one row");
    assert!(d.message(&id).await.is_ok());

    // A plain pooled connection works too.
    let mut conn = pool.acquire().await.unwrap();
    d.using(&SqlxConnection::new(&mut conn))
        .dispatch(NewMessage::new(&ep, "a", 1))
        .await
        .unwrap();
    assert_eq!(ctx.scalar(COUNT_OUTBOX, &[]).await, 2);
}

#[tokio::test]
async fn enqueue_inside_caller_transaction_tokio_postgres_rolls_back_and_commits_with_it() {
    bounded(
        "enqueue_inside_caller_transaction_tokio_postgres_rolls_back_and_commits_with_it",
        Engine::TokioPostgres,
        in_caller_transaction_tokio_postgres_rolls_back_and_commits_with_it(),
    )
    .await
}

async fn in_caller_transaction_tokio_postgres_rolls_back_and_commits_with_it() {
    let ctx = Ctx::new(Engine::TokioPostgres).await;
    let (ep, _) = ctx.endpoint(&ctx.dispatcher()).await;
    let (mut client, connection) = tokio_postgres::connect(&ctx.db_url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let d = ctx.dispatcher();

    let tx = client.transaction().await.unwrap();
    let id = d
        .using(&tx)
        .dispatch(NewMessage::new(&ep, "a", 1))
        .await
        .unwrap()
        .message_id;
    assert!(d.using(&tx).message(&id).await.is_ok());
    assert_eq!(d.message(&id).await.unwrap_err().code(), "unknown_message");
    tx.rollback().await.unwrap();
    assert_eq!(
        ctx.scalar(COUNT_OUTBOX, &[]).await,
        0,
        "rolled back means no outbox row"
    );

    let tx = client.transaction().await.unwrap();
    d.using(&tx).dispatch(NewMessage::new(&ep, "a", 1)).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(ctx.scalar(COUNT_OUTBOX, &[]).await, 1, "committed means one row");

    // The plain client, a deadpool object and a deadpool transaction are executors as well.
    Dispatcher::new(&client)
        .dispatch(NewMessage::new(&ep, "a", 1))
        .await
        .unwrap();
    let pool = deadpool_pool(&ctx.db_url);
    let mut object = pool.get().await.unwrap();
    d.using(&object)
        .dispatch(NewMessage::new(&ep, "a", 1))
        .await
        .unwrap();
    let tx = object.transaction().await.unwrap();
    d.using(&tx).dispatch(NewMessage::new(&ep, "a", 1)).await.unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(ctx.scalar(COUNT_OUTBOX, &[]).await, 3);
}

#[tokio::test]
async fn fan_out_inside_caller_transaction_rolls_back_and_commits_with_it() {
    for engine in [Engine::Sqlx, Engine::TokioPostgres] {
        bounded(
            "fan_out_inside_caller_transaction_rolls_back_and_commits_with_it",
            engine,
            fan_out_in_caller_transaction(engine),
        )
        .await
    }
}

/// One event to two endpoints inside the caller's transaction: rolled back, neither the event nor a
/// message remains; committed, all of them.
async fn fan_out_in_caller_transaction(engine: Engine) {
    let ctx = Ctx::new(engine).await;
    let d = ctx.dispatcher();
    for _ in 0..2 {
        d.register_endpoint(NewEndpoint::new("acme", ctx.url()))
            .await
            .unwrap();
    }
    let event = || NewEvent::new("acme", "invoice.paid", serde_json::json!({"n": 1}));
    let counts = || async {
        (
            ctx.scalar(COUNT_EVENTS, &[]).await,
            ctx.scalar(COUNT_OUTBOX, &[]).await,
        )
    };
    match engine {
        Engine::Sqlx => {
            let pool = sqlx::PgPool::connect(&ctx.db_url).await.unwrap();
            let mut tx = pool.begin().await.unwrap();
            let sent = d
                .using(&SqlxConnection::new(&mut tx))
                .dispatch_event(event())
                .await
                .unwrap();
            assert_eq!(sent.messages.len(), 2);
            tx.rollback().await.unwrap();
            assert_eq!(counts().await, (0, 0), "rolled back: no event, no messages");
            let mut tx = pool.begin().await.unwrap();
            d.using(&SqlxConnection::new(&mut tx))
                .dispatch_event(event())
                .await
                .unwrap();
            tx.commit().await.unwrap();
        }
        _ => {
            let (mut client, connection) = tokio_postgres::connect(&ctx.db_url, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(connection);
            let tx = client.transaction().await.unwrap();
            let sent = d.using(&tx).dispatch_event(event()).await.unwrap();
            assert_eq!(sent.messages.len(), 2);
            tx.rollback().await.unwrap();
            assert_eq!(counts().await, (0, 0), "rolled back: no event, no messages");
            let tx = client.transaction().await.unwrap();
            d.using(&tx).dispatch_event(event()).await.unwrap();
            tx.commit().await.unwrap();
        }
    }
    assert_eq!(counts().await, (1, 2), "committed: the event and both messages");
}
