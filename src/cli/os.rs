//! `diskimage os`: the operating systems installed on a disk set, with
//! product, version, architecture, hostname, system folder and the
//! in-guest mount point of each volume (see README's JSON schema).

use std::path::PathBuf;

use clap::Args;
use diskimage::diskset::DiskSet;
use diskimage::os::{OsInfo, OsReport};

use super::{CliError, OpenArgs};

/// Arguments of `os`.
#[derive(Debug, Args)]
pub struct OsArgs {
    /// The disk images of the set (a separate /usr or data disk may be another image).
    #[arg(required = true)]
    images: Vec<PathBuf>,
    /// Print the documented JSON object instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    open: OpenArgs,
}

/// Runs `os`. No system found is an error (exit 1) in text mode; with
/// `--json` the object says so (`"systems": []`) and the exit code is 1 too.
pub fn run(args: &OsArgs) -> Result<(), CliError> {
    let images = args.open.open_all(&args.images)?;
    let set = DiskSet::from_images(images, &args.open.options())?;
    let report = diskimage::os::detect(&set);
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        print_text(&report);
    }
    if report.systems.is_empty() {
        return Err(CliError::Usage(no_os_message(&report)));
    }
    Ok(())
}

fn no_os_message(report: &OsReport) -> String {
    let mut msg = "no operating system found".to_owned();
    if !report.problems.is_empty() {
        msg.push_str(&format!(
            " ({} volume(s) could not be searched)",
            report.problems.len()
        ));
    }
    msg
}

fn line(label: &str, value: Option<String>) {
    if let Some(v) = value {
        println!("  {label:<17} {v}");
    }
}

fn print_one(os: &OsInfo) {
    println!(
        "{} on volume {}{}",
        os.family.as_str(),
        os.os_folder.volume,
        os.os_folder
            .guest_path
            .as_ref()
            .map(|g| format!(" ({g})"))
            .unwrap_or_default()
    );
    line("product", os.product_name.clone());
    line("pretty name", os.pretty_name.clone());
    line("distribution", os.distribution.clone());
    line("edition", os.edition.clone());
    line("installation", os.installation_type.clone());
    line("version", os.version.clone());
    line(
        "build",
        os.build.map(|b| match os.ubr {
            Some(u) => format!("{b}.{u}"),
            None => b.to_string(),
        }),
    );
    line("display version", os.display_version.clone());
    line("architecture", os.architecture.clone());
    line("hostname", os.hostname.clone());
    line("os folder", Some(os.os_folder.path.clone()));
    for m in &os.mount_points {
        println!(
            "  mount {:<11} volume {:<4} {}{}{}",
            m.path,
            m.volume.map_or("-".into(), |v| v.to_string()),
            m.source,
            m.fs_type
                .as_ref()
                .map(|t| format!(" ({t})"))
                .unwrap_or_default(),
            m.subvolume
                .as_ref()
                .map(|s| format!(" subvolume {s}"))
                .unwrap_or_default()
        );
    }
    for n in &os.notes {
        println!("  note: {n}");
    }
}

fn print_text(report: &OsReport) {
    for os in &report.systems {
        print_one(os);
    }
    for p in &report.problems {
        println!("problem: {p}");
    }
}
