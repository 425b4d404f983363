//! Reading and checking `rules-config/` for bundling. Compiled twice: into
//! the build script, which refuses to build when the rules do not validate,
//! and into the library, so that refusal is tested like any other code.

use std::path::{Path, PathBuf};

/// A rules file found: its name as messages show it, its path, its text.
pub type ConfigFile = (String, PathBuf, String);

/// Reads `dir/*.yaml` (not its subfolders, where ops' tests live) and checks
/// them together. Files are named `<shown_as>/<file name>` in messages (the
/// build names them `rules-config/...`; the `tally` command, the folder as
/// the user typed it). `Err` holds every problem, one per line, each with
/// file, line and column, ready to print.
pub fn load_config_dir(dir: &Path, shown_as: &str) -> Result<Vec<ConfigFile>, String> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    let mut files: Vec<ConfigFile> = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let is_yaml = path
            .extension()
            .is_some_and(|ext| ext == "yaml" || ext == "yml");
        if !is_yaml || !path.is_file() {
            continue;
        }
        let name = format!(
            "{}/{}",
            shown_as.trim_end_matches('/'),
            path.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        );
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("cannot read {name}: {e}"))?;
        files.push((name, path, text));
    }
    files.sort();
    let named: Vec<(&str, &str)> = files
        .iter()
        .map(|(name, _, text)| (name.as_str(), text.as_str()))
        .collect();
    tally_core::rules::RuleSet::load(&named).map_err(|problems| problems.to_string())?;
    Ok(files)
}
