//! Must-show: a fresh process rebuilds the final model from the base and
//! the delta blobs alone and finds it bit-identical to the campaign close.

mod common;

use std::process::Command;

use common::*;
use provenance::*;

#[test]
fn a_fresh_process_rebuilds_the_final_model_bit_for_bit() {
    let dir = std::env::temp_dir().join(format!("govtune-rebuild-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut cfg = config(
        3,
        6000,
        1,
        policy(RoutingGranularity::Head, EventGranularity::Epoch),
    );
    cfg.settings.max_steps = 30;
    cfg.settings.lora.dropout = 0.1;
    cfg.base_weights = Some(dir.join("base.safetensors"));
    let config_path = dir.join("campaign.toml");
    std::fs::write(&config_path, toml::to_string(&cfg).unwrap()).unwrap();
    let events = dir.join("events.txt");
    let exe = env!("CARGO_BIN_EXE_govtune-tuner");
    let run = Command::new(exe)
        .args(["campaign", "run", "--config"])
        .arg(&config_path)
        .arg("--events-out")
        .arg(&events)
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let entries = tuner::sink::read_events(&events).unwrap();
    assert!(
        entries.iter().any(|e| matches!(e, EntryBody::Composite(_))),
        "epoch events are composites"
    );
    let rebuild = Command::new(exe)
        .args(["rebuild", "--config"])
        .arg(&config_path)
        .arg("--events")
        .arg(&events)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&rebuild.stdout);
    assert!(
        rebuild.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&rebuild.stderr)
    );
    assert!(out.contains("bit-identical"), "{out}");
    // Tampering with one delta blob breaks the chain.
    let (campaign, _) = tuner::rebuild::find_fine_tune(&entries).unwrap();
    let d = entries
        .iter()
        .find_map(|e| tuner::rebuild::delta_of(e, &campaign))
        .unwrap();
    let p = tuner::sink::blob_dir(&events).join(d.to_hex());
    let mut bytes = std::fs::read(&p).unwrap();
    let n = bytes.len();
    bytes[n - 1] ^= 1;
    std::fs::write(&p, bytes).unwrap();
    let bad = Command::new(exe)
        .args(["rebuild", "--config"])
        .arg(&config_path)
        .arg("--events")
        .arg(&events)
        .output()
        .unwrap();
    assert!(!bad.status.success());
    let _ = std::fs::remove_dir_all(&dir);
}
