//! Finding mapping files and their golden examples on disk.

use std::path::{Path, PathBuf};

/// A mapping file: every `*.yaml`/`*.yml` under the directory, except inside `examples/` and
/// `scenarios/`.
pub fn mapping_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    walk(dir, &mut out)?;
    out.sort();
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n == "examples" || n == "scenarios") {
                continue;
            }
            walk(&path, out)?;
        } else if is_yaml(&path) {
            out.push(path);
        }
    }
    Ok(())
}

fn is_yaml(p: &Path) -> bool {
    p.extension().is_some_and(|e| e == "yaml" || e == "yml")
}

/// Reads mapping files as `(display name, text)`, as the compiler takes them.
pub fn read_all(paths: &[PathBuf]) -> std::io::Result<Vec<(String, String)>> {
    paths.iter().map(|p| Ok((p.display().to_string(), std::fs::read_to_string(p)?))).collect()
}

/// The golden examples of a mapping file: `examples/*.yaml` beside it.
pub fn examples_of(mapping: &Path) -> std::io::Result<Vec<PathBuf>> {
    let dir = mapping.parent().unwrap_or(Path::new(".")).join("examples");
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let mut out: Vec<PathBuf> =
        std::fs::read_dir(&dir)?.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| is_yaml(p)).collect();
    out.sort();
    Ok(out)
}

/// The files' texts under their path relative to `dir`: how a pushed set names its files, the
/// same wherever the push runs from.
pub fn relative_names(dir: &Path, paths: &[PathBuf], texts: Vec<(String, String)>) -> Vec<(String, String)> {
    paths
        .iter()
        .zip(texts)
        .map(|(p, (_, text))| (p.strip_prefix(dir).unwrap_or(p).display().to_string(), text))
        .collect()
}

/// Every scenario file: `scenarios/*.yaml` anywhere under the directory, sorted.
pub fn scenario_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if !path.is_dir() {
                continue;
            }
            if path.file_name().is_some_and(|n| n == "scenarios") {
                for f in std::fs::read_dir(&path)? {
                    let f = f?.path();
                    if is_yaml(&f) {
                        out.push(f);
                    }
                }
            } else {
                walk(&path, out)?;
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(dir, &mut out)?;
    out.sort();
    Ok(out)
}
