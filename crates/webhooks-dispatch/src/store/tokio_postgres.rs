//! [`Executor`] for tokio-postgres (feature `tokio-postgres`).
//!
//! Implemented for `tokio_postgres::Client`, `tokio_postgres::Transaction` (enqueue inside the caller's
//! transaction), and deadpool-postgres' pooled `Object` and `Pool`. Statements go through `query_typed`, which
//! sends parse, bind and execute in one round trip instead of preparing first.

use std::error::Error as StdError;

use bytes::BytesMut;
use chrono::{DateTime, Utc};
use tokio_postgres::types::{to_sql_checked, IsNull, ToSql, Type};
use tokio_postgres::GenericClient;

use super::{postgres::LISTEN_DUE, BoxFuture, Executor, Listener, Row, Value};
use crate::error::StorageError;

fn storage_error(e: tokio_postgres::Error) -> StorageError {
    let code = e.code().map(|c| c.code().to_owned());
    let closed = e.is_closed();
    StorageError::from_driver(code.as_deref(), closed, e)
}

impl Value {
    fn pg_type(&self) -> Type {
        match self {
            // Statements cast every parameter, so a NULL declared as text is cast to the right type.
            Value::Null | Value::Text(_) => Type::TEXT,
            Value::I32(_) => Type::INT4,
            Value::I64(_) => Type::INT8,
            Value::Bool(_) => Type::BOOL,
            Value::Timestamp(_) => Type::TIMESTAMPTZ,
            Value::TextArray(_) | Value::NullableTextArray(_) => Type::TEXT_ARRAY,
            Value::NullableI32Array(_) => Type::INT4_ARRAY,
            Value::I64Array(_) => Type::INT8_ARRAY,
            Value::NullableTimestampArray(_) => Type::TIMESTAMPTZ_ARRAY,
        }
    }
}

impl ToSql for Value {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn StdError + Sync + Send>> {
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Text(v) => v.to_sql_checked(ty, out),
            Value::I32(v) => v.to_sql_checked(ty, out),
            Value::I64(v) => v.to_sql_checked(ty, out),
            Value::Bool(v) => v.to_sql_checked(ty, out),
            Value::Timestamp(v) => v.to_sql_checked(ty, out),
            Value::TextArray(v) => v.to_sql_checked(ty, out),
            Value::NullableTextArray(v) => v.to_sql_checked(ty, out),
            Value::NullableI32Array(v) => v.to_sql_checked(ty, out),
            Value::I64Array(v) => v.to_sql_checked(ty, out),
            Value::NullableTimestampArray(v) => v.to_sql_checked(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        // The inner value checks its own type in `to_sql` above.
        true
    }

    to_sql_checked!();
}

fn decode(row: &tokio_postgres::Row) -> Result<Row, StorageError> {
    let mut values = Vec::with_capacity(row.len());
    for (i, col) in row.columns().iter().enumerate() {
        let err = |_| StorageError::decode("column could not be decoded");
        let ty = col.type_();
        let v = if *ty == Type::TEXT || *ty == Type::VARCHAR || *ty == Type::NAME || *ty == Type::BPCHAR {
            row.try_get::<_, Option<String>>(i).map_err(err)?.map(Value::Text)
        } else if *ty == Type::INT2 {
            row.try_get::<_, Option<i16>>(i)
                .map_err(err)?
                .map(|v| Value::I32(v.into()))
        } else if *ty == Type::INT4 {
            row.try_get::<_, Option<i32>>(i).map_err(err)?.map(Value::I32)
        } else if *ty == Type::INT8 {
            row.try_get::<_, Option<i64>>(i).map_err(err)?.map(Value::I64)
        } else if *ty == Type::BOOL {
            row.try_get::<_, Option<bool>>(i).map_err(err)?.map(Value::Bool)
        } else if *ty == Type::TIMESTAMPTZ {
            row.try_get::<_, Option<DateTime<Utc>>>(i)
                .map_err(err)?
                .map(Value::Timestamp)
        } else if *ty == Type::TEXT_ARRAY || *ty == Type::VARCHAR_ARRAY {
            row.try_get::<_, Option<Vec<String>>>(i)
                .map_err(err)?
                .map(Value::TextArray)
        } else if *ty == Type::VOID {
            None
        } else {
            return Err(StorageError::decode("unsupported column type"));
        };
        values.push(v.unwrap_or(Value::Null));
    }
    Ok(Row(values))
}

async fn run<C: GenericClient + Sync>(
    client: &C,
    sql: &'static str,
    params: &[Value],
) -> Result<Vec<Row>, StorageError> {
    let typed: Vec<(&(dyn ToSql + Sync), Type)> = params
        .iter()
        .map(|p| (p as &(dyn ToSql + Sync), p.pg_type()))
        .collect();
    let rows = client.query_typed(sql, &typed).await.map_err(storage_error)?;
    rows.iter().map(decode).collect()
}

async fn batch<C: GenericClient + Sync>(client: &C, sql: &'static str) -> Result<(), StorageError> {
    client.batch_execute(sql).await.map_err(storage_error)
}

macro_rules! generic_client_executor {
    ($($ty:ty),*) => {$(
        impl Executor for $ty {
            fn query<'a>(
                &'a self,
                sql: &'static str,
                params: &'a [Value],
            ) -> BoxFuture<'a, Result<Vec<Row>, StorageError>> {
                Box::pin(run(self, sql, params))
            }

            fn batch_execute<'a>(&'a self, sql: &'static str) -> BoxFuture<'a, Result<(), StorageError>> {
                Box::pin(batch(self, sql))
            }
        }
    )*};
}

generic_client_executor!(tokio_postgres::Client, tokio_postgres::Transaction<'_>);

// deadpool's wrappers deref to the tokio-postgres types above.
macro_rules! deref_executor {
    ($($ty:ty => $target:ty),*) => {$(
        impl Executor for $ty {
            fn query<'a>(
                &'a self,
                sql: &'static str,
                params: &'a [Value],
            ) -> BoxFuture<'a, Result<Vec<Row>, StorageError>> {
                let inner: &$target = self;
                Executor::query(inner, sql, params)
            }

            fn batch_execute<'a>(&'a self, sql: &'static str) -> BoxFuture<'a, Result<(), StorageError>> {
                let inner: &$target = self;
                Executor::batch_execute(inner, sql)
            }
        }
    )*};
}

deref_executor!(
    deadpool_postgres::Object => tokio_postgres::Client,
    deadpool_postgres::Transaction<'_> => tokio_postgres::Transaction<'_>
);

fn pool_error(e: deadpool_postgres::PoolError) -> StorageError {
    match e {
        deadpool_postgres::PoolError::Backend(e) => storage_error(e),
        other => StorageError::from_driver(None, true, other),
    }
}

impl Executor for deadpool_postgres::Pool {
    fn query<'a>(
        &'a self,
        sql: &'static str,
        params: &'a [Value],
    ) -> BoxFuture<'a, Result<Vec<Row>, StorageError>> {
        Box::pin(async move {
            let client = self.get().await.map_err(pool_error)?;
            let client: &tokio_postgres::Client = &client;
            run(client, sql, params).await
        })
    }

    fn batch_execute<'a>(&'a self, sql: &'static str) -> BoxFuture<'a, Result<(), StorageError>> {
        Box::pin(async move {
            let client = self.get().await.map_err(pool_error)?;
            let client: &tokio_postgres::Client = &client;
            batch(client, sql).await
        })
    }
}

type ConnectFn = Box<dyn Fn() -> BoxFuture<'static, Result<ListenSession, StorageError>> + Send + Sync>;

struct ListenSession {
    // Dropping the client ends the session, so it lives as long as the receiver.
    _client: tokio_postgres::Client,
    notifications: tokio::sync::mpsc::UnboundedReceiver<()>,
}

/// A [`Listener`] on a dedicated tokio-postgres connection, reconnecting on the call after a lost connection.
pub struct TokioPostgresListener {
    connect: ConnectFn,
    session: Option<ListenSession>,
}

impl TokioPostgresListener {
    /// Connects with `config` and `tls` (e.g. `tokio_postgres::NoTls`) and subscribes to the wake-up channel.
    pub async fn connect<T>(config: tokio_postgres::Config, tls: T) -> Result<Self, StorageError>
    where
        T: tokio_postgres::tls::MakeTlsConnect<tokio_postgres::Socket> + Clone + Send + Sync + 'static,
        T::Stream: Send + 'static,
        T::TlsConnect: Send,
        <T::TlsConnect as tokio_postgres::tls::TlsConnect<tokio_postgres::Socket>>::Future: Send,
    {
        let connect: ConnectFn = Box::new(move || {
            let config = config.clone();
            let tls = tls.clone();
            Box::pin(async move { open_session(config, tls).await })
        });
        let session = connect().await?;
        Ok(TokioPostgresListener {
            connect,
            session: Some(session),
        })
    }
}

async fn open_session<T>(config: tokio_postgres::Config, tls: T) -> Result<ListenSession, StorageError>
where
    T: tokio_postgres::tls::MakeTlsConnect<tokio_postgres::Socket> + Send + 'static,
    T::Stream: Send + 'static,
    T::TlsConnect: Send,
    <T::TlsConnect as tokio_postgres::tls::TlsConnect<tokio_postgres::Socket>>::Future: Send,
{
    use futures_util::StreamExt;
    let (client, mut connection) = config.connect(tls).await.map_err(storage_error)?;
    let (tx, notifications) = tokio::sync::mpsc::unbounded_channel();
    // The connection must be polled by hand to see notifications; the task ends when the connection does,
    // which closes the channel and tells `recv` to reconnect.
    tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(tokio_postgres::AsyncMessage::Notification(_)) => {
                    if tx.send(()).is_err() {
                        break;
                    }
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
    });
    client.batch_execute(LISTEN_DUE).await.map_err(storage_error)?;
    Ok(ListenSession {
        _client: client,
        notifications,
    })
}

impl Listener for TokioPostgresListener {
    fn recv(&mut self) -> BoxFuture<'_, Result<(), StorageError>> {
        Box::pin(async move {
            if self.session.is_none() {
                self.session = Some((self.connect)().await?);
            }
            let session = self.session.as_mut().expect("session was just opened");
            match session.notifications.recv().await {
                Some(()) => {
                    // Coalesce a burst into one wake-up.
                    while session.notifications.try_recv().is_ok() {}
                    Ok(())
                }
                None => {
                    self.session = None;
                    Err(StorageError::from_driver(
                        None,
                        true,
                        std::io::Error::other("listen connection closed"),
                    ))
                }
            }
        })
    }
}
