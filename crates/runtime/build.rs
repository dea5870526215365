//! Embeds the repository's `schemas/` directory into the runtime crate.
//!
//! Why a build script: the wire contract is the set of `.avsc` files, and a processor binary must
//! carry exactly the schemas (current *and* history versions) it was built from, so that it can
//! decode single-object data written with any of them without a registry. Generating the
//! `include_str!` table from the directory listing means nobody has to keep a hand-written list in
//! sync; `tests/schemas.rs` still checks that the bundle equals the directory.
//!
//! Output: `$OUT_DIR/bundled_schemas.rs`, a `&[(&str, &str)]` of (path relative to `schemas/`,
//! file contents), sorted by path so the bundle is deterministic.

use std::env;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "avsc") {
            out.push(path);
        }
    }
    Ok(())
}

fn main() -> io::Result<()> {
    let manifest =
        PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let schemas = manifest.join("..").join("..").join("schemas");
    // A directory path makes cargo rescan the whole tree for changes (new, edited or removed files).
    println!("cargo:rerun-if-changed={}", schemas.display());

    let mut files = Vec::new();
    collect(&schemas, &mut files).map_err(|e| {
        io::Error::new(e.kind(), format!("reading schemas directory {}: {e}", schemas.display()))
    })?;
    files.sort();

    let mut code = String::from(
        "/// Every `.avsc` under the repository's `schemas/` directory: (relative path, contents).\n\
         pub(crate) static BUNDLED: &[(&str, &str)] = &[\n",
    );
    for file in &files {
        let relative = file
            .strip_prefix(&schemas)
            .expect("collected below the schemas directory")
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join("/");
        let absolute = fs::canonicalize(file)?;
        code.push_str(&format!(
            "    ({:?}, include_str!({:?})),\n",
            relative,
            absolute.to_string_lossy()
        ));
    }
    code.push_str("];\n");

    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    fs::write(out.join("bundled_schemas.rs"), code)
}
