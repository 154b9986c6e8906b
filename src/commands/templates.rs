//! `templates DIR`: write the shipped templates into a folder, to edit them there and point
//! `templates:` at it. Files already in the folder are kept, so running it again never undoes an
//! edit.

use crate::route::render::SHIPPED;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// `templates` arguments.
#[derive(Debug, clap::Args)]
pub struct TemplatesArgs {
    /// The folder to write them into (created if missing); then set `templates:` to it.
    pub dir: PathBuf,
}

/// `templates DIR`.
pub fn run(args: &TemplatesArgs) -> anyhow::Result<ExitCode> {
    print!("{}", write_shipped(&args.dir)?);
    Ok(ExitCode::SUCCESS)
}

/// Writes every shipped template missing from `dir` and says what it wrote and kept.
pub fn write_shipped(dir: &Path) -> anyhow::Result<String> {
    use std::fmt::Write;
    std::fs::create_dir_all(dir)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
    let mut out = String::new();
    let (mut written, mut kept) = (0, 0);
    for (file, src) in SHIPPED {
        let path = dir.join(file);
        // `create_new`: an existing file (an edit) is never replaced, even in a race.
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(mut f) => {
                std::io::Write::write_all(&mut f, src.as_bytes())
                    .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
                written += 1;
                let _ = writeln!(out, "wrote {}", path.display());
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                kept += 1;
                let _ = writeln!(out, "kept  {} (already there)", path.display());
            }
            Err(e) => anyhow::bail!("cannot write {}: {e}", path.display()),
        }
    }
    let _ = writeln!(
        out,
        "{written} written, {kept} kept. Set `templates: {}` in the config to use them; a file \
         removed from there falls back to the shipped one.",
        dir.display()
    );
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_every_shipped_template_and_keeps_an_edited_one() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("templates");
        let out = write_shipped(&folder).unwrap();
        assert!(
            out.contains(&format!("{} written, 0 kept", SHIPPED.len())),
            "{out}"
        );
        for (file, src) in SHIPPED {
            assert_eq!(std::fs::read_to_string(folder.join(file)).unwrap(), *src);
        }
        let edited = folder.join(SHIPPED[0].0);
        std::fs::write(&edited, "my edit").unwrap();
        let out = write_shipped(&folder).unwrap();
        assert!(
            out.contains(&format!("0 written, {} kept", SHIPPED.len())),
            "{out}"
        );
        assert_eq!(std::fs::read_to_string(&edited).unwrap(), "my edit");
    }
}
