//! A primary killed: 503 then recovery within 25 s, and tokens and sessions that survive it.

use super::*;

/// Killing the primary that serves some cache keys and channels (3 primaries + 3 replicas,
/// `--cluster-node-timeout 5000`): reads and publishes that need it answer 503 problems (never a
/// 500, never a hang: each request is bounded), and work again within 25 s of the kill; SSE
/// subscribers of two channels on it (different slots) and one elsewhere keep their streams and
/// receive what is published after recovery; a value written before the kill is still read.
#[actix_web::test]
async fn primary_failover_answers_503_then_recovers_within_25_s() {
    let mut backend = Backend::cluster_with_replicas();
    let config = fleet_config(&backend);
    let server = serve_instance(&config, 2).await;
    let cache = server.services.cache.clone();
    let addr = server.addr;
    let ttl = Duration::from_secs(300);
    cache
        .set("api:fo-anchor", &json!({"v": 0}), ttl)
        .await
        .unwrap();
    publish(addr, PUBLISHER, "fo-chan", r#"{"n":0}"#, Duration::ZERO).await;
    let cluster = backend.cluster_mut().unwrap();
    let cache_anchor = key_containing(cluster, "fo-anchor");
    let chan_anchor = key_containing(cluster, "fo-chan");
    let victim = cluster.owner_of_slot(slot_of(&cache_anchor));
    let other = *cluster.primaries().iter().find(|&&p| p != victim).unwrap();
    let kept = names_on(cluster, &cache_anchor, "fo-anchor", victim, "fo-kept-", 1).remove(0);
    // Absent keys, one per probe (never read before, so never in L1).
    let dead_absent = names_on(cluster, &cache_anchor, "fo-anchor", victim, "fo-da-", 300);
    let live_absent = names_on(cluster, &cache_anchor, "fo-anchor", other, "fo-la-", 300);
    let mut dead_channels = names_on(cluster, &chan_anchor, "fo-chan", victim, "fo-cd-", 3);
    let probe_channel = dead_channels.pop().unwrap();
    let mut channels = dead_channels;
    channels.extend(names_on(
        cluster,
        &chan_anchor,
        "fo-chan",
        other,
        "fo-cl-",
        1,
    ));
    let mut streams = Vec::new();
    for channel in &channels {
        streams.push(open_stream(addr, &format!("/events/{channel}")).await);
    }
    for channel in &channels {
        wait_subscribed(backend.cluster_mut().unwrap(), channel).await;
    }
    cache
        .set(&format!("api:{kept}"), &json!({"v": 1}), ttl)
        .await
        .unwrap();
    let cluster = backend.cluster_mut().unwrap();
    cluster.wait_replicated();

    let killed_at = Instant::now();
    cluster.kill(victim);
    // The first requests come before any failover can start (node timeout 5 s).
    let first = request(
        addr,
        "GET",
        &format!("/cache/{}", dead_absent[299]),
        &[],
        "",
    )
    .await;
    first.problem(503);
    // A key on a live primary: 404, or at worst a 503 problem (redis-rs refreshes the topology
    // after the lost connection); recorded, as the issue asks only for never a 500 or a hang.
    let live = request(
        addr,
        "GET",
        &format!("/cache/{}", live_absent[299]),
        &[],
        "",
    )
    .await;
    if live.status != 404 {
        live.problem(503);
    }
    eprintln!(
        "a key on a live primary right after the kill: {}",
        live.status
    );
    let limit = Duration::from_secs(25);
    let (reads, read_back) = probe_until_steady(
        &mut |n| {
            let path = format!("/cache/{}", dead_absent[n % 299]);
            Box::pin(async move { request(addr, "GET", &path, &[], "").await })
        },
        404,
        killed_at,
        limit,
    )
    .await;
    let bearer = format!("Bearer {PUBLISHER}");
    let (publishes, publish_back) = probe_until_steady(
        &mut |_| {
            let (path, bearer) = (format!("/events/{probe_channel}"), bearer.clone());
            Box::pin(async move {
                let headers = [
                    ("authorization", bearer.as_str()),
                    ("content-type", "application/json"),
                ];
                request(addr, "POST", &path, &headers, r#"{"probe":true}"#).await
            })
        },
        202,
        killed_at,
        limit,
    )
    .await;
    eprintln!(
        "reads back {read_back:?} after the kill ({reads:?}), publishes {publish_back:?} ({publishes:?})"
    );
    assert!(read_back <= limit && publish_back <= limit);
    // Keys on the other primaries: read again (each probe is bounded; the cluster itself refuses
    // commands while no primary serves the victim's slots, so this is checked after recovery).
    let live = request(addr, "GET", &format!("/cache/{}", live_absent[0]), &[], "").await;
    assert_eq!(live.status, 404);
    // The value written before the kill was replicated and is read from the promoted replica.
    let read = request(addr, "GET", &format!("/cache/{kept}"), &[], "").await;
    assert_eq!(
        (read.status, read.json()["value"].clone()),
        (200, json!({"v": 1}))
    );
    // The streams opened before the kill stay open and get what is published now.
    for channel in &channels {
        wait_subscribed(backend.cluster_mut().unwrap(), channel).await;
    }
    for (n, channel) in channels.iter().enumerate() {
        publish(addr, PUBLISHER, channel, &format!(r#"{{"n":{n}}}"#), REACH).await;
    }
    for (n, stream) in streams.iter_mut().enumerate() {
        let data = next_data(stream, Duration::from_secs(5)).await;
        assert_eq!(data, format!(r#"{{"n":{n}}}"#), "{}", channels[n]);
    }
    server.stop().await;
}

/// A user logged in before its session's primary is killed keeps a valid access token and a
/// valid refresh token once a replica took over (3 primaries + 3 replicas).
#[actix_web::test]
async fn tokens_and_sessions_survive_a_primary_failover() {
    let mut backend = Backend::cluster_with_replicas();
    let config = fleet_config(&backend);
    let services = common::services(&config);
    common::feed_ready(&services).await;
    let server = TestServer::start(services, 1);
    let addr = server.addr;
    let (access, refresh) = login(addr, "survivor").await;
    let cluster = backend.cluster_mut().unwrap();
    let session = key_containing(cluster, "session");
    cluster.wait_replicated();
    let killed_at = Instant::now();
    let victim = cluster.owner_of_slot(slot_of(&session));
    cluster.kill(victim);
    cluster.wait_failover(victim, Duration::from_secs(25)).await;
    let bearer = format!("Bearer {access}");
    let deadline = killed_at + Duration::from_secs(25);
    loop {
        let reply = request(addr, "GET", "/auth/me", &[("authorization", &bearer)], "").await;
        if reply.status == 200 {
            assert_eq!(reply.json()["username"], "survivor");
            break;
        }
        reply.problem(503);
        assert!(
            Instant::now() < deadline,
            "/auth/me still 503 25 s after the kill"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let body = format!(r#"{{"refresh_token":"{refresh}"}}"#);
    let json = [("content-type", "application/json")];
    let reply = request(addr, "POST", "/auth/refresh", &json, &body).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    server.stop().await;
}

/// One request of a failover probe, numbered.
type Probe<'a> =
    dyn FnMut(usize) -> std::pin::Pin<Box<dyn std::future::Future<Output = Reply>>> + 'a;

/// Sends `probe`'s requests every 200 ms: answers (statuses seen, when `ok` was first answered) once
/// `ok` came 5 times in a row; any status but `ok` must be a 503 problem; panics if `ok` is not
/// back `limit` after `since`.
async fn probe_until_steady(
    probe: &mut Probe<'_>,
    ok: u16,
    since: Instant,
    limit: Duration,
) -> (Vec<u16>, Duration) {
    let mut statuses = Vec::new();
    let mut recovered_at = None;
    let mut steady = 0;
    for n in 0.. {
        let reply = probe(n).await;
        if reply.status != ok {
            reply.problem(503);
        }
        statuses.push(reply.status);
        match (reply.status == ok, recovered_at) {
            (true, None) => recovered_at = Some(since.elapsed()),
            (true, Some(_)) => steady += 1,
            (false, Some(at)) => panic!("failed again after recovering at {at:?}: {statuses:?}"),
            (false, None) => assert!(
                since.elapsed() < limit,
                "not recovered {limit:?} after the kill: {statuses:?}"
            ),
        }
        if steady == 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    (statuses, recovered_at.unwrap())
}
