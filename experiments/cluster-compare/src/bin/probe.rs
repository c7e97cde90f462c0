//! Subscribes to `topic` on one node, asks another node (its trigger port)
//! to publish `count` server-originated messages every `interval_us`, and
//! reports cross-node delivery latency.
//!
//! Usage: probe <sub_mqtt_port> <trigger_port> <count> <interval_us> [topic] [timeline_ms]
//!
//! Latency is measured twice: from the moment the publisher actually
//! called `forwards` ("actual"), and from the moment it was scheduled to
//! ("intended": includes the time the publisher was stuck behind an
//! earlier, slow `forwards` call; no coordinated omission).

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::bail;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

fn now_ns() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos()
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a: Vec<String> = std::env::args().collect();
    if a.len() < 5 {
        bail!("usage: probe <sub_mqtt_port> <trigger_port> <count> <interval_us> [topic] [timeline_ms]");
    }
    let sub_port: u16 = a[1].parse()?;
    let trigger_port: u16 = a[2].parse()?;
    let count: u64 = a[3].parse()?;
    let interval_us: u64 = a[4].parse()?;
    let topic = a.get(5).cloned().unwrap_or_else(|| "thread/x".into());
    let timeline_ms: u128 = a.get(6).map(|s| s.parse()).transpose()?.unwrap_or(0);

    let mut opts = MqttOptions::new(format!("probe-{}", std::process::id()), "127.0.0.1", sub_port);
    opts.set_keep_alive(Duration::from_secs(30));
    opts.set_clean_session(true);
    opts.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut el) = AsyncClient::new(opts, 10_000);
    client.subscribe(&topic, QoS::AtLeastOnce).await?;
    loop {
        match tokio::time::timeout(Duration::from_secs(10), el.poll()).await {
            Ok(Ok(Event::Incoming(Packet::SubAck(_)))) => break,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => bail!("mqtt: {e}"),
            Err(_) => bail!("no SUBACK"),
        }
    }
    // Let a remote-interest mechanism settle (none needed for either mode).
    tokio::time::sleep(Duration::from_millis(200)).await;

    let mut trig = TcpStream::connect(("127.0.0.1", trigger_port)).await?;
    let pmode = std::env::var("PUBLISH_MODE").unwrap_or_else(|_| "seq".into());
    trig.write_all(format!("{count} {interval_us} {topic} {pmode}\n").as_bytes()).await?;
    let reply = tokio::spawn(async move {
        let mut line = String::new();
        let _ = BufReader::new(trig).read_line(&mut line).await;
        line
    });

    // seq -> (intended, actual, received)
    let mut got: HashMap<u64, (u128, u128, u128)> = HashMap::new();
    let mut dups = 0u64;
    let grace = Duration::from_secs(
        std::env::var("PROBE_GRACE_S").ok().and_then(|s| s.parse().ok()).unwrap_or(15),
    );
    let deadline = tokio::time::Instant::now() + Duration::from_micros(interval_us * count) + grace;
    while (got.len() as u64) < count {
        match tokio::time::timeout_at(deadline, el.poll()).await {
            Ok(Ok(Event::Incoming(Packet::Publish(p)))) => {
                let r = now_ns();
                let s = String::from_utf8_lossy(&p.payload);
                let f: Vec<u128> = s.split(',').filter_map(|x| x.parse().ok()).collect();
                if f.len() == 3 {
                    if got.insert(f[0] as u64, (f[1], f[2], r)).is_some() {
                        dups += 1;
                    }
                }
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                eprintln!("mqtt error: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(_) => break,
        }
    }
    let reply = tokio::time::timeout(grace, reply).await;

    let mut actual: Vec<f64> = got.values().map(|(_, a, r)| (*r as f64 - *a as f64) / 1e6).collect();
    let mut intended: Vec<f64> = got.values().map(|(i, _, r)| (*r as f64 - *i as f64) / 1e6).collect();
    actual.sort_by(|a, b| a.partial_cmp(b).unwrap());
    intended.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "received {}/{} (lost {}, dups {})",
        got.len(),
        count,
        count - got.len() as u64,
        dups
    );
    println!(
        "latency from actual send ms:   p50={:.3} p99={:.3} max={:.3}",
        pct(&actual, 0.5),
        pct(&actual, 0.99),
        actual.last().copied().unwrap_or(f64::NAN)
    );
    println!(
        "latency from intended send ms: p50={:.3} p99={:.3} max={:.3}",
        pct(&intended, 0.5),
        pct(&intended, 0.99),
        intended.last().copied().unwrap_or(f64::NAN)
    );
    match reply {
        Ok(Ok(l)) => print!("publisher: {l}"),
        _ => println!("publisher: no reply"),
    }
    if timeline_ms > 0 {
        // Buckets by intended send time: how many were sent, received, worst latency.
        let start = (0..count).filter_map(|s| got.get(&s)).map(|(i, _, _)| *i).min().unwrap_or(0)
            - 0;
        let per_bucket = (timeline_ms * 1000 / interval_us as u128).max(1) as u64;
        println!("timeline (bucket {timeline_ms} ms by intended send time): t_ms sent recv max_intended_ms max_actual_ms");
        let mut seq = 0u64;
        while seq < count {
            let end = (seq + per_bucket).min(count);
            let rows: Vec<_> = (seq..end).filter_map(|s| got.get(&s)).collect();
            let mi = rows.iter().map(|(i, _, r)| (*r as f64 - *i as f64) / 1e6).fold(0.0, f64::max);
            let ma = rows.iter().map(|(_, a, r)| (*r as f64 - *a as f64) / 1e6).fold(0.0, f64::max);
            let t = seq as u128 * interval_us as u128 / 1000;
            println!("{t:>7} {:>4} {:>4} {mi:>10.1} {ma:>10.1}", end - seq, rows.len());
            seq = end;
        }
        let _ = start;
    }
    let _ = client.disconnect().await;
    Ok(())
}
