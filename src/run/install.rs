//! `install DIR`: copies this program into a shared `emptyDir`, so that another container of
//! the pod can use `run` (the distroless image has no `cp`).

use std::process::ExitCode;

/// Copies this program into `directory` as `pod-webhook-tracker` (mode 0755), through a
/// temporary file and a rename, so that a reader never sees half a program.
pub fn install(directory: &std::path::Path) -> ExitCode {
    use std::os::unix::fs::PermissionsExt;
    let target = directory.join("pod-webhook-tracker");
    let partial = directory.join(".pod-webhook-tracker.partial");
    let copied = std::env::current_exe()
        .map_err(|e| format!("cannot find this program: {e}"))
        .and_then(|source| {
            std::fs::copy(&source, &partial).map_err(|e| {
                format!(
                    "cannot copy {} to {}: {e}",
                    source.display(),
                    partial.display()
                )
            })
        })
        .and_then(|_| {
            std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(0o755))
                .and_then(|()| std::fs::rename(&partial, &target))
                .map_err(|e| format!("cannot install {}: {e}", target.display()))
        });
    match copied {
        Ok(()) => {
            println!("installed {}", target.display());
            ExitCode::SUCCESS
        }
        Err(why) => {
            let _ = std::fs::remove_file(&partial);
            eprintln!("error: {why}");
            ExitCode::FAILURE
        }
    }
}
