//! The demo's data, built into the binary so that an installed `govtune`
//! runs its demo from any directory: `data/demo.toml` and every play it
//! names, written out into the demo's folder when no `--config` is given.

use std::path::{Path, PathBuf};

use crate::TestnetError;

macro_rules! file {
    ($p:literal) => {
        ($p, include_bytes!(concat!("../../../data/", $p)).as_slice())
    };
}

/// (path under `data/`, bytes) of every file the demo's campaign file uses.
const FILES: &[(&str, &[u8])] = &[
    file!("demo.toml"),
    file!("plays/probe/sonnets.txt"),
    file!("plays/base/lear.txt"),
    file!("plays/base/macbeth.txt"),
    file!("plays/base/othello.txt"),
    file!("plays/base/romeo_and_juliet.txt"),
    file!("plays/sources/as_you_like_it.txt"),
    file!("plays/sources/comedy_of_errors.txt"),
    file!("plays/sources/cymbeline.txt"),
    file!("plays/sources/measure_for_measure.txt"),
    file!("plays/sources/merchant_of_venice.txt"),
    file!("plays/sources/midsummer_nights_dream.txt"),
    file!("plays/sources/taming_of_the_shrew.txt"),
    file!("plays/sources/twelfth_night.txt"),
    file!("plays/sources/two_gentlemen_of_verona.txt"),
    file!("plays/sources/winters_tale.txt"),
];

/// Writes the built-in data into `dir` (replacing what an earlier run
/// wrote there) and returns the campaign file's path.
pub fn extract(dir: &Path) -> Result<PathBuf, TestnetError> {
    for (name, bytes) in FILES {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| TestnetError::Io(format!("{}: {e}", parent.display())))?;
        }
        std::fs::write(&path, bytes).map_err(|e| TestnetError::Io(format!("{}: {e}", path.display())))?;
    }
    Ok(dir.join("demo.toml"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_campaign_file_finds_every_file_it_names() {
        let dir = tempfile::tempdir().expect("tmp");
        let config = extract(dir.path()).expect("extract");
        let cfg = tuner::demo::DemoConfig::load(&config).expect("the built-in campaign file loads");
        super::super::DemoPlan::load(&config).expect("its [demo] table");
        let named = cfg
            .base_sources
            .iter()
            .chain(&cfg.sources)
            .map(|s| s.path.clone())
            .chain([cfg.probe.clone()]);
        for p in named {
            assert!(
                p.is_file(),
                "{} is named by demo.toml but not built in",
                p.display()
            );
        }
        assert!(cfg.base_weights.is_none(), "the demo pretrains its own base");
    }
}
