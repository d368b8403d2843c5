//! Target status text as structured JSON (`vblkctl status --json`).

use serde_json::{json, Value};

/// The value of `key=value` in a counters text.
fn counter<'a>(counters: &'a str, key: &str) -> Option<&'a str> {
    counters
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
}

/// A per-leg counter (`key=a,b,c`) as `n` values (`None` where missing).
fn per_leg(counters: &str, key: &str, n: usize) -> Vec<Option<u64>> {
    let list: Vec<Option<u64>> = counter(counters, key)
        .map(|v| v.split(',').map(|x| x.parse().ok()).collect())
        .unwrap_or_default();
    (0..n).map(|i| list.get(i).copied().flatten()).collect()
}

/// A mirror line's status, dm's fields
/// (`2 1:0 1:1 3/8 1 AA 1 core` or `... 3 disk 1:2 A`) and vblk's
/// counters (`sync_sectors=S/T resync_copied=N held_for_copy=N
/// held_for_log=N held_for_flush=N reads=a,b writes=a,b`, and with a disk
/// log `log_blocks_read=N log_blocks_written=N`), as `{"legs": [{"device",
/// "health", "reads", "writes"}], "sync": {...}, "held": {...}, "log":
/// {...}}`. `None` if the fields do not parse.
pub fn mirror_json(status: &str, counters: &str) -> Option<Value> {
    let w: Vec<&str> = status.split_whitespace().collect();
    let n: usize = w.first()?.parse().ok()?;
    let devices = w.get(1..1 + n)?;
    let (synced, total) = w.get(1 + n)?.split_once('/')?;
    let health = w.get(3 + n)?;
    if health.chars().count() != n {
        return None;
    }
    let mut log = match (w.get(5 + n).copied(), w.get(6 + n), w.get(7 + n)) {
        (Some("core"), _, _) => json!({"type": "core"}),
        (Some("disk"), Some(dev), Some(h)) => json!({"type": "disk", "device": dev, "health": h}),
        _ => return None,
    };
    let field = |key: &str| counter(counters, key);
    let (reads, writes) = (
        per_leg(counters, "reads", n),
        per_leg(counters, "writes", n),
    );
    let legs: Vec<Value> = devices
        .iter()
        .zip(health.chars())
        .enumerate()
        .map(|(i, (dev, h))| {
            json!({"device": dev, "health": h.to_string(), "reads": reads[i], "writes": writes[i]})
        })
        .collect();
    let mut sync = json!({
        "regions_in_sync": synced.parse::<u64>().ok()?,
        "regions": total.parse::<u64>().ok()?,
    });
    if let Some((s, t)) = field("sync_sectors").and_then(|v| v.split_once('/')) {
        sync["sectors_in_sync"] = s.parse::<u64>().ok().into();
        sync["sectors"] = t.parse::<u64>().ok().into();
    }
    if let Some(c) = field("resync_copied").and_then(|v| v.parse::<u64>().ok()) {
        sync["regions_copied"] = c.into();
    }
    let count = |key: &str| field(key).and_then(|v| v.parse::<u64>().ok());
    if let (Some(r), Some(w)) = (count("log_blocks_read"), count("log_blocks_written")) {
        log["blocks_read"] = r.into();
        log["blocks_written"] = w.into();
    }
    let held = json!({
        "for_copy": count("held_for_copy"),
        "for_log": count("held_for_log"),
        "for_flush": count("held_for_flush"),
    });
    Some(json!({"legs": legs, "sync": sync, "held": held, "log": log}))
}

/// A snapshot's status (`Invalid`, `Overflow`, or dm's
/// `<allocated>/<total> <metadata>` sectors) and its counters as JSON.
pub fn snapshot_json(status: &str, counters: &str) -> Option<Value> {
    let w: Vec<&str> = status.split_whitespace().collect();
    let mut out = match w.as_slice() {
        ["Invalid"] => json!({"state": "invalid"}),
        ["Overflow"] => json!({"state": "overflow"}),
        [usage, meta] => {
            let (alloc, total) = usage.split_once('/')?;
            json!({
                "state": "valid",
                "sectors_allocated": alloc.parse::<u64>().ok()?,
                "total_sectors": total.parse::<u64>().ok()?,
                "metadata_sectors": meta.parse::<u64>().ok()?,
            })
        }
        _ => return None,
    };
    for kv in counters.split_whitespace() {
        if let Some((k, v)) = kv.split_once('=') {
            if let Ok(n) = v.parse::<u64>() {
                out[k] = n.into();
            }
        }
    }
    Some(out)
}

/// A raid line's status, dm-raid's fields (`raid5_ls 4 AaAA 512/16384
/// recover 0 0 -`), and its counters (`lanes=N ... reads=a,b,c
/// writes=a,b,c`), as `{"raid_type", "legs": [{"health", "reads",
/// "writes"}], "sync": {"sectors_in_sync", "sectors", "action"},
/// "mismatch_sectors", "data_offset", "journal", "counters": {...}}`.
/// `None` if the fields do not parse.
pub fn raid_json(status: &str, counters: &str) -> Option<Value> {
    let w: Vec<&str> = status.split_whitespace().collect();
    let [raid_type, n, health, ratio, action, mismatch, data_offset, journal] = w.as_slice() else {
        return None;
    };
    let n: usize = n.parse().ok()?;
    if health.chars().count() != n {
        return None;
    }
    let (synced, total) = ratio.split_once('/')?;
    let (reads, writes) = (
        per_leg(counters, "reads", n),
        per_leg(counters, "writes", n),
    );
    let legs: Vec<Value> = health
        .chars()
        .enumerate()
        .map(|(i, h)| json!({"health": h.to_string(), "reads": reads[i], "writes": writes[i]}))
        .collect();
    let mut counts = serde_json::Map::new();
    for kv in counters.split_whitespace() {
        if let Some((k, v)) = kv.split_once('=') {
            if let Ok(x) = v.parse::<u64>() {
                counts.insert(k.to_string(), x.into());
            }
        }
    }
    Some(json!({
        "raid_type": raid_type,
        "legs": legs,
        "sync": {
            "sectors_in_sync": synced.parse::<u64>().ok()?,
            "sectors": total.parse::<u64>().ok()?,
            "action": action,
        },
        "mismatch_sectors": mismatch.parse::<u64>().ok()?,
        "data_offset": data_offset.parse::<u64>().ok()?,
        "journal": journal,
        "counters": counts,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raid_status_as_json() {
        let v = raid_json(
            "raid5_ls 4 AaAA 512/16384 recover 0 0 -",
            "lanes=32 unit_sectors=128 rmw=3 reads=1,0,2,3 writes=4,5,6,7",
        )
        .unwrap();
        assert_eq!(v["raid_type"], "raid5_ls");
        assert_eq!(v["legs"][1]["health"], "a");
        assert_eq!(v["legs"][3]["reads"], 3);
        assert_eq!(v["legs"][0]["writes"], 4);
        assert_eq!(v["sync"]["sectors_in_sync"], 512);
        assert_eq!(v["sync"]["action"], "recover");
        assert_eq!(v["counters"]["rmw"], 3);
        assert!(raid_json("raid5_ls 4 AAA 1/2 idle 0 0 -", "").is_none());
        assert!(raid_json("raid5_ls 4 AAAA 1-2 idle 0 0 -", "").is_none());
        assert!(raid_json("raid5_ls 4 AAAA 1/2 idle 0 0", "").is_none());
    }

    #[test]
    fn mirror_core_with_counters() {
        let v = mirror_json(
            "2 7:0 7:1 3/8 1 AD 1 core",
            "sync_sectors=3072/8192 resync_copied=3 held_for_copy=5 held_for_log=2 held_for_flush=1 reads=10,4 writes=7,7",
        )
        .unwrap();
        assert_eq!(v["legs"][0]["device"], "7:0");
        assert_eq!(v["legs"][1]["health"], "D");
        assert_eq!(v["legs"][0]["reads"], 10);
        assert_eq!(v["legs"][1]["writes"], 7);
        assert_eq!(v["sync"]["regions_in_sync"], 3);
        assert_eq!(v["sync"]["regions"], 8);
        assert_eq!(v["sync"]["sectors_in_sync"], 3072);
        assert_eq!(v["sync"]["regions_copied"], 3);
        assert_eq!(v["held"]["for_copy"], 5);
        assert_eq!(v["held"]["for_log"], 2);
        assert_eq!(v["held"]["for_flush"], 1);
        assert_eq!(v["log"]["type"], "core");
    }

    #[test]
    fn mirror_disk_log_counters() {
        let v = mirror_json(
            "2 7:0 7:1 8/8 1 AA 3 disk 7:9 A",
            "sync_sectors=8192/8192 resync_copied=0 held_for_copy=0 held_for_log=4 held_for_flush=2 reads=1,1 writes=4,4 log_blocks_read=3 log_blocks_written=7",
        )
        .unwrap();
        assert_eq!(v["log"]["blocks_read"], 3);
        assert_eq!(v["log"]["blocks_written"], 7);
        assert_eq!(v["held"]["for_flush"], 2);
    }

    #[test]
    fn mirror_disk_without_counters() {
        let v = mirror_json("3 7:0 7:1 7:2 8/8 1 AAR 3 disk 7:9 A", "").unwrap();
        assert_eq!(
            v["log"],
            json!({"type": "disk", "device": "7:9", "health": "A"})
        );
        assert_eq!(v["legs"][2]["health"], "R");
        assert!(v["legs"][2]["reads"].is_null());
        assert!(v["sync"].get("sectors").is_none());
    }

    #[test]
    fn mirror_malformed() {
        assert!(mirror_json("2 7:0 3/8 1 AA 1 core", "").is_none());
        assert!(mirror_json("2 7:0 7:1 3-8 1 AA 1 core", "").is_none());
        assert!(mirror_json("2 7:0 7:1 3/8 1 A 1 core", "").is_none());
        assert!(mirror_json("2 7:0 7:1 3/8 1 AA 3 disk", "").is_none());
    }

    #[test]
    fn snapshot_status_as_json() {
        let v = snapshot_json("16/2097152 16", "exceptions=0 chunks_copied=3").unwrap();
        assert_eq!(v["state"], "valid");
        assert_eq!(v["sectors_allocated"], 16);
        assert_eq!(v["total_sectors"], 2097152);
        assert_eq!(v["metadata_sectors"], 16);
        assert_eq!(v["chunks_copied"], 3);
        assert_eq!(snapshot_json("Invalid", "").unwrap()["state"], "invalid");
        assert_eq!(snapshot_json("Overflow", "").unwrap()["state"], "overflow");
        assert!(snapshot_json("1/2", "").is_none());
        assert!(snapshot_json("x/2 3", "").is_none());
    }
}
