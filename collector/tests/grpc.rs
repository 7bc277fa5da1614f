//! The gRPC service, end to end: a real server on 127.0.0.1:0, a real tonic
//! client, a real SQLite file.

mod common;

use std::os::unix::fs::PermissionsExt as _;

use collector::{EventFilter, ServeConfig, Store};
use common::{Proc, SENSOR, SensorStream, T0, TestServer, exec, execs};
use prost::Message as _;
use sensor_proto::v1::{Ack, Event};
use tonic::Code;

/// One row of the `events` table.
#[derive(Debug, PartialEq)]
struct Columns {
    sensor_id: String,
    seq: i64,
    host_id: String,
    host_name: String,
    kind: String,
    time_ns: i64,
    exec_id: String,
    parent_exec_id: String,
    pid: i64,
    exe: String,
    body: Vec<u8>,
}

#[tokio::test]
async fn a_batch_is_stored_and_acked_with_its_highest_seq() -> anyhow::Result<()> {
    let server = TestServer::start(ServeConfig::default()).await?;
    let mut client = server.client().await?;
    let mut stream = SensorStream::open(&mut client).await?;

    let sh = Proc {
        exec_id: "e-sh",
        parent_exec_id: "e-init",
        pid: 100,
        exe: "/bin/sh",
        argv: &["sh", "-c", "echo hi"],
    };
    let echo = Proc {
        exec_id: "e-echo",
        parent_exec_id: "e-sh",
        pid: 101,
        exe: "/bin/echo",
        argv: &["echo", "hi"],
    };
    let batch = vec![
        exec(SENSOR, 7, T0 + 2_000, &echo),
        exec(SENSOR, 5, T0 + 1_000, &sh),
        common::exit(SENSOR, 6, T0 + 3_000, &echo, 0),
    ];
    let ack = stream.send(batch.clone()).await?;
    assert_eq!(ack, Ack { acked_seq: 7 });

    stream.close();
    stream.end().await?;
    let (summary, db) = server.stop().await?;
    assert_eq!(summary.writer.inserted, 3);
    assert_eq!(summary.writer.duplicates, 0);
    assert!(!summary.forced);

    // The columns hold the fields investigators search by; body is the event.
    let conn = rusqlite::Connection::open(&db.path)?;
    let mut stmt = conn.prepare(
        "SELECT sensor_id, seq, host_id, host_name, kind, time_ns, exec_id, parent_exec_id,
                pid, exe, body
         FROM events ORDER BY seq",
    )?;
    let rows = stmt
        .query_map([], |r| {
            Ok(Columns {
                sensor_id: r.get(0)?,
                seq: r.get(1)?,
                host_id: r.get(2)?,
                host_name: r.get(3)?,
                kind: r.get(4)?,
                time_ns: r.get(5)?,
                exec_id: r.get(6)?,
                parent_exec_id: r.get(7)?,
                pid: r.get(8)?,
                exe: r.get(9)?,
                body: r.get(10)?,
            })
        })?
        .collect::<Result<Vec<Columns>, _>>()?;
    let t0 = i64::try_from(T0)?;
    let expected = [
        (
            5,
            "exec",
            t0 + 1_000,
            "e-sh",
            "e-init",
            100,
            "/bin/sh",
            &batch[1],
        ),
        (
            6,
            "exit",
            t0 + 3_000,
            "e-echo",
            "e-sh",
            101,
            "/bin/echo",
            &batch[2],
        ),
        (
            7,
            "exec",
            t0 + 2_000,
            "e-echo",
            "e-sh",
            101,
            "/bin/echo",
            &batch[0],
        ),
    ]
    .map(
        |(seq, kind, time_ns, exec_id, parent_exec_id, pid, exe, event)| Columns {
            sensor_id: "sensor-a".into(),
            seq,
            host_id: "host-id-1".into(),
            host_name: "web-1".into(),
            kind: kind.into(),
            time_ns,
            exec_id: exec_id.into(),
            parent_exec_id: parent_exec_id.into(),
            pid,
            exe: exe.into(),
            body: event.encode_to_vec(),
        },
    );
    assert_eq!(rows, expected);
    let bodies: Vec<Event> = rows
        .iter()
        .map(|r| Event::decode(r.body.as_slice()))
        .collect::<Result<_, _>>()?;
    assert_eq!(
        bodies,
        vec![batch[1].clone(), batch[2].clone(), batch[0].clone()]
    );
    Ok(())
}

#[tokio::test]
async fn redelivered_events_are_stored_once() -> anyhow::Result<()> {
    let server = TestServer::start(ServeConfig::default()).await?;
    let mut client = server.client().await?;

    let mut first = SensorStream::open(&mut client).await?;
    assert_eq!(first.send(execs(SENSOR, 1..=3)).await?.acked_seq, 3);
    // Overlapping batch on the same stream: 2 and 3 again, 4 is new.
    assert_eq!(first.send(execs(SENSOR, 2..=4)).await?.acked_seq, 4);
    // A duplicate inside one batch.
    assert_eq!(first.send(execs(SENSOR, [5, 5])).await?.acked_seq, 5);
    first.close();
    first.end().await?;

    // The sensor reconnects and resends everything it has not seen acked.
    let mut second = SensorStream::open(&mut client).await?;
    assert_eq!(second.send(execs(SENSOR, 1..=5)).await?.acked_seq, 5);
    // The same seqs from another sensor are other events.
    assert_eq!(second.send(execs("sensor-b", 1..=2)).await?.acked_seq, 2);
    second.close();
    second.end().await?;

    let (summary, db) = server.stop().await?;
    assert_eq!(summary.writer.inserted, 7);
    assert_eq!(summary.writer.duplicates, 2 + 1 + 5);

    let store = Store::open_read_only(&db.path)?;
    assert_eq!(store.count()?, 7);
    let stored: Vec<(String, u64)> = store
        .query(&EventFilter::default())?
        .into_iter()
        .map(|e| (e.sensor_id, e.seq))
        .collect();
    let expected: Vec<(String, u64)> = vec![
        ("sensor-a".into(), 1),
        ("sensor-b".into(), 1),
        ("sensor-a".into(), 2),
        ("sensor-b".into(), 2),
        ("sensor-a".into(), 3),
        ("sensor-a".into(), 4),
        ("sensor-a".into(), 5),
    ];
    assert_eq!(stored, expected);
    Ok(())
}

#[tokio::test]
async fn an_oversized_batch_is_refused_and_another_stream_continues() -> anyhow::Result<()> {
    let server = TestServer::start(ServeConfig::default()).await?;
    let mut client = server.client().await?;

    // Both streams share one HTTP/2 connection.
    let mut good = SensorStream::open(&mut client).await?;
    assert_eq!(good.send(execs("sensor-good", 1..=2)).await?.acked_seq, 2);

    let mut hostile = SensorStream::open(&mut client).await?;
    let refused = hostile
        .send(execs("sensor-hostile", 1..=10_001))
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("a batch of 10,001 events was accepted"))?;
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert_eq!(
        refused.message(),
        "batch of 10001 events refused: at most 10000 events per batch"
    );

    assert_eq!(good.send(execs("sensor-good", 3..=4)).await?.acked_seq, 4);
    // A new stream works too, and a batch of exactly the limit is accepted.
    let mut again = SensorStream::open(&mut client).await?;
    assert_eq!(
        again
            .send(execs("sensor-hostile", 1..=10_000))
            .await?
            .acked_seq,
        10_000
    );
    good.close();
    again.close();

    let (_, db) = server.stop().await?;
    let store = Store::open_read_only(&db.path)?;
    let good_filter = EventFilter {
        sensor_id: Some("sensor-good".into()),
        ..EventFilter::default()
    };
    assert_eq!(store.query(&good_filter)?.len(), 4);
    assert_eq!(store.count()?, 10_004);
    Ok(())
}

#[tokio::test]
async fn a_message_over_the_size_limit_is_refused_and_the_connection_survives() -> anyhow::Result<()>
{
    let server = TestServer::start(ServeConfig::default()).await?;
    let mut client = server.client().await?;
    let mut good = SensorStream::open(&mut client).await?;
    assert_eq!(good.send(execs("sensor-good", [1])).await?.acked_seq, 1);

    // 17 events of 1 MiB of argv each: over the 16 MiB message limit.
    let big_arg = "x".repeat(1024 * 1024);
    let p = Proc {
        exec_id: "e-big",
        parent_exec_id: "e-sh",
        pid: 300,
        exe: "/usr/bin/big",
        argv: &["big", &big_arg],
    };
    let batch: Vec<Event> = (1..=17)
        .map(|seq| exec("sensor-big", seq, T0, &p))
        .collect();
    let mut hostile = SensorStream::open(&mut client).await?;
    let refused = hostile
        .send(batch)
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("a 17 MiB batch was accepted"))?;
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(
        refused
            .message()
            .starts_with("batch message refused: Error, decoded message length too large"),
        "{refused:?}"
    );

    assert_eq!(good.send(execs("sensor-good", [2])).await?.acked_seq, 2);
    good.close();
    let (_, db) = server.stop().await?;
    assert_eq!(Store::open_read_only(&db.path)?.count()?, 2);
    Ok(())
}

#[tokio::test]
async fn an_event_without_a_sensor_id_refuses_its_whole_batch() -> anyhow::Result<()> {
    let server = TestServer::start(ServeConfig::default()).await?;
    let mut client = server.client().await?;
    let mut stream = SensorStream::open(&mut client).await?;
    let mut batch = execs(SENSOR, 1..=3);
    batch[1].sensor_id.clear();
    let refused = stream
        .send(batch)
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("an event without sensor_id was accepted"))?;
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert_eq!(
        refused.message(),
        "batch refused: event seq 2 has no sensor_id"
    );

    let (_, db) = server.stop().await?;
    assert_eq!(Store::open_read_only(&db.path)?.count()?, 0);
    Ok(())
}

#[tokio::test]
async fn batches_in_flight_are_acked_in_order_until_a_refused_one_ends_the_stream()
-> anyhow::Result<()> {
    let server = TestServer::start(ServeConfig::default()).await?;
    let mut client = server.client().await?;
    let mut stream = SensorStream::open(&mut client).await?;
    // A sensor keeps several batches in flight; the fourth is malformed.
    let mut bad = execs(SENSOR, 31..=40);
    bad[3].sensor_id.clear();
    for batch in [
        execs(SENSOR, 1..=10),
        execs(SENSOR, 11..=20),
        execs(SENSOR, 21..=30),
        bad,
        execs(SENSOR, 41..=50),
    ] {
        stream.queue(batch).await?;
    }
    stream.close();

    // The batches before it are committed and acked, in order; then the
    // stream ends with the refusal, and nothing after it is stored.
    for acked_seq in [10, 20, 30] {
        assert_eq!(stream.next_ack().await?, Ack { acked_seq });
    }
    let refused = stream
        .end()
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("the malformed batch was accepted"))?;
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    let (summary, db) = server.stop().await?;
    assert_eq!(summary.writer.inserted, 30);
    let seqs: Vec<u64> = Store::open_read_only(&db.path)?
        .query(&EventFilter::default())?
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(seqs, (1..=30).collect::<Vec<_>>());
    Ok(())
}

#[tokio::test]
async fn an_empty_batch_is_acked_with_the_streams_last_acked_seq() -> anyhow::Result<()> {
    let server = TestServer::start(ServeConfig::default()).await?;
    let mut client = server.client().await?;
    let mut stream = SensorStream::open(&mut client).await?;
    assert_eq!(stream.send(Vec::new()).await?.acked_seq, 0);
    assert_eq!(stream.send(execs(SENSOR, 10..=12)).await?.acked_seq, 12);
    assert_eq!(stream.send(Vec::new()).await?.acked_seq, 12);
    stream.close();
    server.stop().await?;
    Ok(())
}

#[tokio::test]
async fn shutdown_commits_what_was_received_and_ends_open_streams() -> anyhow::Result<()> {
    let server = TestServer::start(ServeConfig::default()).await?;
    let mut client = server.client().await?;
    let mut stream = SensorStream::open(&mut client).await?;
    assert_eq!(stream.send(execs(SENSOR, 1..=50)).await?.acked_seq, 50);

    // The stream stays open while the collector shuts down.
    let stopping = tokio::spawn(server.stop());
    let end = stream.end().await;
    let status = end
        .err()
        .ok_or_else(|| anyhow::anyhow!("the stream ended without a status"))?;
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");

    let (summary, db) = stopping.await??;
    assert!(!summary.forced);
    assert_eq!(summary.writer.inserted, 50);
    assert_eq!(Store::open_read_only(&db.path)?.count()?, 50);
    Ok(())
}

#[tokio::test]
async fn the_database_file_is_created_private() -> anyhow::Result<()> {
    let server = TestServer::start(ServeConfig::default()).await?;
    let mode = std::fs::metadata(&server.db.path)?.permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    server.stop().await?;
    Ok(())
}

#[tokio::test]
async fn a_seq_beyond_the_storable_range_refuses_its_batch() -> anyhow::Result<()> {
    let server = TestServer::start(ServeConfig::default()).await?;
    let mut client = server.client().await?;
    let mut stream = SensorStream::open(&mut client).await?;
    let refused = stream
        .send(execs(SENSOR, [1, u64::MAX]))
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("seq u64::MAX was accepted"))?;
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert_eq!(
        refused.message(),
        "batch refused: event of sensor \"sensor-a\" has seq 18446744073709551615, \
         above the largest storable 9223372036854775807"
    );
    let (_, db) = server.stop().await?;
    assert_eq!(Store::open_read_only(&db.path)?.count()?, 0);
    Ok(())
}

#[tokio::test]
async fn acked_events_are_queryable_while_the_server_runs() -> anyhow::Result<()> {
    let server = TestServer::start(ServeConfig::default()).await?;
    let mut client = server.client().await?;
    let mut stream = SensorStream::open(&mut client).await?;
    assert_eq!(stream.send(execs(SENSOR, 1..=3)).await?.acked_seq, 3);

    let reader = Store::open_read_only(&server.db.path)?;
    assert_eq!(reader.count()?, 3);
    assert_eq!(stream.send(execs(SENSOR, 4..=5)).await?.acked_seq, 5);
    assert_eq!(reader.count()?, 5);
    drop(reader);

    stream.close();
    server.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sensors_are_all_stored() -> anyhow::Result<()> {
    let server = TestServer::start(ServeConfig::default()).await?;
    let mut sensors = Vec::new();
    for n in 0..6 {
        let mut client = server.client().await?;
        sensors.push(tokio::spawn(async move {
            let sensor = format!("sensor-{n}");
            let mut stream = SensorStream::open(&mut client).await?;
            let mut acks = Vec::new();
            for b in 0..20_u64 {
                let ack = stream
                    .send(execs(&sensor, b * 50 + 1..=b * 50 + 50))
                    .await?;
                acks.push(ack.acked_seq);
            }
            stream.close();
            stream.end().await?;
            anyhow::Ok(acks)
        }));
    }
    let expected: Vec<u64> = (1..=20).map(|b| b * 50).collect();
    for sensor in sensors {
        assert_eq!(sensor.await??, expected);
    }
    let (summary, db) = server.stop().await?;
    assert_eq!(summary.writer.inserted, 6 * 1000);
    assert_eq!(summary.writer.batches, 6 * 20);
    assert_eq!(Store::open_read_only(&db.path)?.count()?, 6000);
    Ok(())
}

#[tokio::test]
async fn an_event_is_stored_as_the_bytes_its_sensor_sent_unknown_fields_included()
-> anyhow::Result<()> {
    let server = TestServer::start(ServeConfig::default()).await?;
    let sh = Proc {
        exec_id: "e-sh",
        parent_exec_id: "e-init",
        pid: 100,
        exe: "/bin/sh",
        argv: &["sh"],
    };
    let event = exec(SENSOR, 1, T0, &sh);
    // A newer sensor's event: a field this collector does not know (99)
    // follows the ones it does.
    let mut sent = event.encode_to_vec();
    prost::encoding::encode_key(99, prost::encoding::WireType::Varint, &mut sent);
    prost::encoding::encode_varint(42, &mut sent);
    let mut batch = sensor_proto::encoded::EncodedBatch::with_capacity(sent.len() + 8);
    batch.push(&sent);

    let channel = tonic::transport::Channel::from_shared(format!("http://{}", server.addr))?
        .connect()
        .await?;
    let mut acks = sensor_proto::encoded::stream(channel, tokio_stream::iter([batch]))
        .await?
        .into_inner();
    assert_eq!(acks.message().await?, Some(Ack { acked_seq: 1 }));
    assert_eq!(acks.message().await?, None);

    let (_, db) = server.stop().await?;
    let conn = rusqlite::Connection::open(&db.path)?;
    let body: Vec<u8> = conn.query_row("SELECT body FROM events", [], |r| r.get(0))?;
    assert_eq!(body, sent, "the body is the bytes as sent");
    let store = Store::open_read_only(&db.path)?;
    assert_eq!(store.query(&EventFilter::default())?, vec![event]);
    Ok(())
}

#[tokio::test]
async fn a_method_the_collector_does_not_have_is_unimplemented_and_the_connection_survives()
-> anyhow::Result<()> {
    let server = TestServer::start(ServeConfig::default()).await?;
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", server.addr))?
        .connect()
        .await?;
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await?;
    let status = grpc
        .unary(
            tonic::Request::new(Ack { acked_seq: 1 }),
            tonic::codegen::http::uri::PathAndQuery::from_static("/sensor.v1.Collector/Query"),
            tonic_prost::ProstCodec::<Ack, Ack>::default(),
        )
        .await
        .expect_err("no such method");
    assert_eq!(status.code(), Code::Unimplemented);

    let mut client = sensor_proto::v1::collector_client::CollectorClient::new(channel);
    let mut stream = SensorStream::open(&mut client).await?;
    assert_eq!(stream.send(execs(SENSOR, 1..=2)).await?.acked_seq, 2);
    stream.close();
    stream.end().await?;
    server.stop().await?;
    Ok(())
}
