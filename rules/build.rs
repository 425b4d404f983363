//! Bundles `rules-config/*.yaml` into the rules stage, and refuses to build
//! when they do not validate: a rules file with a mistake can never be
//! deployed. Every problem is printed with its file, line and column.

use std::path::PathBuf;

#[path = "src/bundle.rs"]
mod bundle;

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let config = manifest.join("..").join("rules-config");
    println!("cargo:rerun-if-changed={}", config.display());
    let files = match bundle::load_config_dir(&config, "rules-config") {
        Ok(files) => files,
        Err(problems) => {
            eprintln!(
                "error: the rules in rules-config/ do not validate; fix them before building:\n{problems}"
            );
            std::process::exit(1);
        }
    };
    let mut source = String::from(
        "/// The rules files bundled at build time: (name, contents).\npub const FILES: &[(&str, &str)] = &[\n",
    );
    for (name, path, _) in &files {
        println!("cargo:rerun-if-changed={}", path.display());
        source.push_str(&format!(
            "    ({name:?}, include_str!({:?})),\n",
            path.display().to_string()
        ));
    }
    source.push_str("];\n");
    let out =
        PathBuf::from(std::env::var_os("OUT_DIR").unwrap_or_default()).join("bundled_rules.rs");
    if let Err(e) = std::fs::write(&out, source) {
        eprintln!("error: cannot write {}: {e}", out.display());
        std::process::exit(1);
    }
}
