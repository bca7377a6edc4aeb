//! The README tour end to end: `hub serve --dev` with the repository's mappings, the tour's
//! signed order, the catcher printing the delivery, and `hub events show` reporting it
//! delivered.

use crate::support::*;
use hmac::{KeyInit, Mac};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).expect("copy");
        }
    }
}

#[tokio::test]
async fn the_tour_webhook_reaches_the_dev_catcher_and_is_shown_delivered() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dir = tempfile::tempdir().expect("tmp");
    let mappings = dir.path().join("mappings");
    copy_dir(&repo.join("mappings"), &mappings);
    // Tests run side by side: the catcher gets a free port instead of the README's 8090, and
    // the tour mapping is pointed at it.
    let catcher = std::net::TcpListener::bind("127.0.0.1:0").expect("probe").local_addr().expect("addr");
    let tour = mappings.join("tour/mapping.yaml");
    let text = std::fs::read_to_string(&tour).expect("tour mapping");
    assert!(text.contains("http://127.0.0.1:8090/crm/deals"), "the tour mapping targets the default catcher");
    std::fs::write(&tour, text.replace("127.0.0.1:8090", &catcher.to_string())).expect("write");
    let store = dir.path().join("hub.redb");

    let mut child = Command::new(hub_bin())
        .args(["serve", "--dev", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .arg("--catcher-listen")
        .arg(catcher.to_string())
        .arg("--store")
        .arg(&store)
        .arg("--mappings")
        .arg(&mappings)
        .env("HUB_LOG", "warn")
        .env_remove("TOUR_SECRET")
        .env_remove("HUB_ALLOW_NETS")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start hub");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let first = rx.recv_timeout(Duration::from_secs(60)).expect("hub started");
    let base =
        first.strip_prefix("listening on ").unwrap_or_else(|| panic!("unexpected: {first}")).to_string();

    // As in the README: the body file, signed with the --dev placeholder of the secret.
    let body = std::fs::read(mappings.join("tour/examples/order_paid.json")).expect("body");
    let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"<env:TOUR_SECRET>").expect("key");
    m.update(&body);
    let sig = format!("sha256={}", hex::encode(m.finalize().into_bytes()));
    let ack: serde_json::Value = reqwest::Client::new()
        .post(format!("{base}/hooks/tour"))
        .header("content-type", "application/json")
        .header("x-tour-signature", sig)
        .body(body)
        .send()
        .await
        .expect("post")
        .json()
        .await
        .expect("ack");
    assert_eq!(ack["status"], "accepted", "{ack}");
    let id = ack["event_id"].as_str().expect("id").to_string();

    // The catcher prints the delivery on the server's terminal.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut printed = Vec::new();
    while !printed.iter().any(|l: &String| l.contains("\"email\": \"ann.lee@example.com\"")) {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx.recv_timeout(left).unwrap_or_else(|_| panic!("catcher printed only {printed:#?}"));
        printed.push(line);
    }
    let text = printed.join("\n");
    assert!(text.contains("catcher received POST /crm/deals"), "{text}");
    assert!(text.contains(&format!("x-hub-event-id: {id}")), "{text}");

    // `hub events show` asks the running server and reports the delivery.
    let s = store.to_str().expect("utf8");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (code, out) = hub_cli(&["events", "show", &id, "--store", s]);
        assert_eq!(code, 0, "{out}");
        let shown: serde_json::Value = serde_json::from_str(&out).expect("json");
        if shown["status"] == "delivered" {
            break;
        }
        assert!(Instant::now() < deadline, "not delivered: {shown:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
}
