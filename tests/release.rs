//! The release, as far as it can run here: the workflows in `.github/workflows` pass actionlint
//! and call Makefile targets that exist; `make build-all` builds the static binaries this
//! machine has a toolchain for and names what the others lack; then the release's own targets
//! run as the workflow runs them, against a registry on loopback (`crane registry serve`): the
//! SBOMs (syft) list exactly the crates linked into the binary, the image pushed by
//! `make image-push` is FROM scratch and configured as the Dockerfile's final stage says, for
//! every built architecture, and the same inputs push the same digest; the chart is pushed as
//! an OCI artifact whose digest the workflow signs; the checksums verify. Only the keyless
//! signatures need GitHub (its OIDC token). And the image reference that manifests, chart,
//! documentation and Makefile use is the injector's default `--sidecar-image`.
//!
//! The tools are built from their Go modules by crates/testenv (actionlint, crane, syft, helm);
//! cargo-auditable, which the release builds with so that syft can list the crates, is
//! installed from crates.io into the same cache.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;

use pod_webhook_tracker::config::inject::OWN_IMAGE;
use serde_json::Value;

const NAME: &str = "pod-webhook-tracker";
const VERSION: &str = concat!("v", env!("CARGO_PKG_VERSION"));
/// Each architecture of the release: its Rust target and its ELF machine number.
const ARCHES: [(&str, &str, u16); 2] = [
    ("amd64", "x86_64-unknown-linux-musl", 0x3e),
    ("arm64", "aarch64-unknown-linux-musl", 0xb7),
];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(file: &str) -> String {
    std::fs::read_to_string(root().join(file))
        .unwrap_or_else(|error| panic!("cannot read {file}: {error}"))
}

fn said(output: &Output) -> String {
    format!(
        "{}\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pwt-release-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a scratch folder");
    dir
}

/// `make ARGS...` in the repository root, with the release tools.
fn make(args: &[&str], dist: &Path) -> Output {
    testenv::release::make(root())
        .args(args)
        .arg(format!("DIST={}", dist.display()))
        .arg(format!("CRANE={}", testenv::tool("crane").display()))
        .arg(format!("SYFT={}", testenv::tool("syft").display()))
        .arg(format!("HELM={}", testenv::tool("helm").display()))
        .output()
        .expect("make runs")
}

// ---------------------------------------------------------------------------------------------
// The workflows

fn workflows() -> Vec<PathBuf> {
    let dir = root().join(".github/workflows");
    let mut found: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("the workflows")
        .map(|entry| entry.expect("an entry").path())
        .filter(|path| {
            matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("yml" | "yaml")
            )
        })
        .collect();
    found.sort();
    found
}

#[test]
fn the_workflows_pass_actionlint_and_call_makefile_targets_that_exist() {
    let files = workflows();
    assert!(
        files.iter().any(|f| f.ends_with("release.yml")),
        "{files:?}"
    );
    // actionlint checks the workflow syntax, the expressions, the actions' inputs, the runner
    // labels, and (with shellcheck on PATH) every run: script.
    let output = Command::new(testenv::tool("actionlint"))
        .args(["-no-color", "-oneline"])
        .args(&files)
        .current_dir(root())
        .output()
        .expect("actionlint runs");
    assert!(output.status.success(), "actionlint: {}", said(&output));
    assert!(stdout(&output).trim().is_empty(), "{}", said(&output));

    // Every `make ...` of a run: script is a dry run that make accepts as written.
    let mut calls = BTreeSet::new();
    for file in &files {
        for line in std::fs::read_to_string(file).expect("a workflow").lines() {
            let Some(at) = line.find("make ") else {
                continue;
            };
            if line.trim_start().starts_with('#') {
                continue;
            }
            let command: String = line[at..]
                .split(['|', ')'])
                .next()
                .expect("a command")
                .trim()
                .to_owned();
            // The matrix's value of a job (the architecture).
            let command = command.replace("${{ matrix.arch }}", "amd64");
            assert!(!command.contains("${{"), "{command}: a value to fill in");
            calls.insert(command);
        }
    }
    assert!(calls.len() >= 7, "{calls:?}");
    for call in calls {
        let script = format!(
            "GITHUB_REF_NAME={VERSION}; VERSION={VERSION}; {}",
            call.replacen("make ", "make -n ", 1)
        );
        let output = Command::new("bash")
            .args(["-c", &script])
            .current_dir(root())
            .output()
            .expect("bash runs");
        assert!(output.status.success(), "{call}: {}", said(&output));
        assert!(
            !said(&output).contains("No rule to make target"),
            "{call}: {}",
            said(&output)
        );
    }
}

// ---------------------------------------------------------------------------------------------
// One image reference

#[test]
fn the_image_everything_uses_is_the_injectors_default_sidecar_image() {
    let (repository, tag) = OWN_IMAGE.rsplit_once(':').expect("a tag");
    assert_eq!(tag, VERSION, "the image of this very version");
    let printed = Command::new("make")
        .args(["-s", "print-image"])
        .current_dir(root())
        .output()
        .expect("make runs");
    assert_eq!(stdout(&printed).trim(), OWN_IMAGE, "make print-image");

    // Every reference to the image with a tag, in every file a user reads or applies.
    let mut files = vec![PathBuf::from("README.md"), PathBuf::from("Dockerfile")];
    for dir in ["manifests", "examples", "docs", "charts"] {
        walk(&root().join(dir), &mut files);
    }
    let mut found = 0;
    let mut wrong = Vec::new();
    for file in files {
        let Ok(text) = std::fs::read_to_string(root().join(&file)) else {
            continue; // not text
        };
        for (at, _) in text.match_indices(&format!("{repository}:")) {
            let reference: String = text[at..]
                .chars()
                .take_while(|c| !c.is_whitespace() && !"\"'`,)]}".contains(*c))
                .collect();
            found += 1;
            if reference != OWN_IMAGE {
                wrong.push(format!("{}: {reference}", file.display()));
            }
        }
    }
    assert!(found >= 10, "only {found} references");
    assert!(wrong.is_empty(), "not {OWN_IMAGE}: {wrong:#?}");

    // The chart, rendered with its defaults and with the standalone service: every image of
    // ours, the trackers' included, is this one.
    let output = Command::new(testenv::tool("helm"))
        .args([
            "template",
            "pwt",
            "charts/pod-webhook-tracker",
            "--set",
            "standalone.enabled=true",
        ])
        .current_dir(root())
        .output()
        .expect("helm runs");
    assert!(output.status.success(), "helm template: {}", said(&output));
    let rendered = stdout(&output);
    let references: Vec<&str> = rendered
        .match_indices(repository)
        .map(|(at, _)| {
            rendered[at..]
                .split(|c: char| c.is_whitespace() || c == '"')
                .next()
                .expect("a reference")
        })
        .collect();
    assert!(references.len() >= 2, "{rendered}");
    for reference in references {
        assert_eq!(reference, OWN_IMAGE, "in the chart");
    }
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries {
        let path = entry.expect("an entry").path();
        if path.is_dir() {
            walk(&path, out);
        } else {
            out.push(path.strip_prefix(root()).expect("inside").to_path_buf());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Building

/// What `make build-all` did, once for this test binary: where, what it said, and the
/// architectures it built.
struct Built {
    dist: PathBuf,
    output: Output,
    built: Vec<(&'static str, &'static str, u16)>,
}

fn built() -> &'static Built {
    static BUILT: OnceLock<Built> = OnceLock::new();
    BUILT.get_or_init(|| {
        let dist = scratch("dist");
        // As the release workflow builds: with the crate list embedded for the SBOM.
        let output = make(
            &[
                "build-all",
                &format!("VERSION={VERSION}"),
                testenv::release::CARGO_BUILD,
            ],
            &dist,
        );
        let built = ARCHES
            .into_iter()
            .filter(|(arch, _, _)| {
                dist.join(format!("{NAME}-{VERSION}-linux-{arch}.tar.gz"))
                    .is_file()
            })
            .collect();
        Built {
            dist,
            output,
            built,
        }
    })
}

fn tarball(dist: &Path, arch: &str) -> PathBuf {
    dist.join(format!("{NAME}-{VERSION}-linux-{arch}.tar.gz"))
}

/// The files of a tarball (or of an image's exported file system): path → (mode, owner, size).
fn tar_listing(file: &Path, gzip: bool) -> BTreeMap<String, String> {
    let output = Command::new("tar")
        .arg(if gzip { "-tvzf" } else { "-tvf" })
        .arg(file)
        .arg("--numeric-owner")
        .output()
        .expect("tar runs");
    assert!(output.status.success(), "tar: {}", said(&output));
    stdout(&output)
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let path = fields.last().expect("a path").trim_start_matches("./");
            (
                path.trim_end_matches('/').to_owned(),
                format!("{} {}", fields[0], fields[1]),
            )
        })
        .filter(|(path, _)| !path.is_empty() && path != ".")
        .collect()
}

/// One file out of a tarball.
fn extract(file: &Path, gzip: bool, member: &str, into: &Path) -> PathBuf {
    std::fs::create_dir_all(into).expect("a folder");
    let output = Command::new("tar")
        .arg(if gzip { "-xzf" } else { "-xf" })
        .arg(file)
        .arg("-C")
        .arg(into)
        .arg(member)
        .output()
        .expect("tar runs");
    assert!(output.status.success(), "tar: {}", said(&output));
    into.join(member)
}

/// The ELF machine of a binary and whether it asks for a dynamic loader (PT_INTERP).
fn elf(binary: &Path) -> (u16, bool) {
    let bytes = std::fs::read(binary).expect("the binary");
    assert_eq!(&bytes[..4], b"\x7fELF", "an ELF file");
    assert_eq!(bytes[4], 2, "64-bit");
    assert_eq!(bytes[5], 1, "little-endian");
    let u16_at = |at: usize| u16::from_le_bytes([bytes[at], bytes[at + 1]]);
    let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
    let machine = u16_at(18);
    let (phoff, phentsize, phnum) = (u64_at(32) as usize, u16_at(54) as usize, u16_at(56));
    let interpreter = (0..usize::from(phnum)).any(|n| {
        let at = phoff + n * phentsize;
        u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) == 3 // PT_INTERP
    });
    (machine, interpreter)
}

#[test]
fn build_all_builds_the_static_binaries_this_machine_can_and_names_what_the_others_lack() {
    let built = built();
    let text = said(&built.output);
    assert!(built.output.status.success(), "make build-all: {text}");
    for (arch, target, machine) in ARCHES {
        let tarball = tarball(&built.dist, arch);
        if !tarball.is_file() {
            // Not built: it says so, and what is missing (the Rust target or the C compiler).
            let line = text
                .lines()
                .find(|line| {
                    line.starts_with(&format!("build-all: cannot build linux/{arch} here: "))
                })
                .unwrap_or_else(|| panic!("linux/{arch} neither built nor explained: {text}"));
            assert!(
                line.contains(target) || line.contains("C compiler"),
                "{line}"
            );
            continue;
        }
        let files: BTreeSet<String> = tar_listing(&tarball, true).into_keys().collect();
        assert_eq!(
            files,
            BTreeSet::from([
                NAME.to_owned(),
                "LICENSE".to_owned(),
                "THIRD-PARTY-LICENSES".to_owned()
            ]),
            "{}",
            tarball.display()
        );
        let binary = extract(
            &tarball,
            true,
            NAME,
            &built.dist.join(format!(".check-{arch}")),
        );
        let (found, interpreter) = elf(&binary);
        assert_eq!(found, machine, "linux/{arch}: the ELF machine");
        assert!(!interpreter, "linux/{arch}: static, no dynamic loader");
        if std::env::consts::ARCH == if arch == "amd64" { "x86_64" } else { "aarch64" } {
            let version = Command::new(&binary)
                .arg("version")
                .output()
                .expect("it runs");
            assert!(stdout(&version).contains(VERSION), "{}", said(&version));
        }
    }
    let summary = text
        .lines()
        .find(|l| l.starts_with("build-all: built:"))
        .unwrap_or_else(|| panic!("no summary: {text}"));
    for (arch, _, _) in &built.built {
        assert!(summary.contains(&format!("linux/{arch}")), "{summary}");
    }
    // What the release requires: every architecture, or an error naming what was not built.
    let strict = make(
        &[
            "build-all",
            &format!("VERSION={VERSION}"),
            testenv::release::CARGO_BUILD,
            "REQUIRE_ALL=1",
        ],
        &built.dist,
    );
    assert_eq!(
        strict.status.success(),
        built.built.len() == ARCHES.len(),
        "REQUIRE_ALL=1: {}",
        said(&strict)
    );
    assert!(
        !built.built.is_empty(),
        "this machine builds no architecture (musl-tools and the musl Rust target are needed): {text}"
    );
}

/// Crates by name and version.
type Crates = BTreeSet<(String, String)>;

/// The crates of the binary for a Rust target, from `cargo metadata`: those
/// whose code is linked in (the normal dependencies, not descending into proc-macro crates,
/// which run at build time only), and the whole normal dependency graph (proc macros and what
/// they use included). Test-only and build-script crates are in neither.
fn linked_crates(target: &str) -> (Crates, Crates) {
    let output = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--locked",
            "--filter-platform",
            target,
        ])
        .current_dir(root())
        .output()
        .expect("cargo metadata runs");
    assert!(output.status.success(), "cargo metadata: {}", said(&output));
    let meta: Value = serde_json::from_slice(&output.stdout).expect("JSON");
    let packages: BTreeMap<&str, &Value> = meta["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .map(|p| (p["id"].as_str().expect("an id"), p))
        .collect();
    let nodes: BTreeMap<&str, &Value> = meta["resolve"]["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| (n["id"].as_str().expect("an id"), n))
        .collect();
    let proc_macro = |id: &str| {
        packages[id]["targets"]
            .as_array()
            .expect("targets")
            .iter()
            .any(|t| {
                t["kind"]
                    .as_array()
                    .is_some_and(|k| k.iter().any(|k| k == "proc-macro"))
            })
    };
    let walk = |into_proc_macros: bool| {
        let mut seen = BTreeSet::new();
        let mut todo = vec![meta["resolve"]["root"].as_str().expect("a root")];
        while let Some(id) = todo.pop() {
            if (!into_proc_macros && proc_macro(id)) || !seen.insert(id) {
                continue;
            }
            for dep in nodes[id]["deps"].as_array().expect("deps") {
                let normal = dep["dep_kinds"]
                    .as_array()
                    .expect("dep kinds")
                    .iter()
                    .any(|k| k["kind"].is_null());
                if normal {
                    todo.push(dep["pkg"].as_str().expect("a package"));
                }
            }
        }
        seen.into_iter()
            .map(|id| {
                let p = packages[id];
                (
                    p["name"].as_str().expect("a name").to_owned(),
                    p["version"].as_str().expect("a version").to_owned(),
                )
            })
            .collect::<Crates>()
    };
    (walk(false), walk(true))
}

// ---------------------------------------------------------------------------------------------
// SBOMs, checksums, image and chart: the release's targets, against a loopback registry

/// `crane registry serve` on a loopback port, stopped when dropped.
struct Registry {
    child: Child,
    address: String,
}

impl Registry {
    fn start() -> Registry {
        let mut child = Command::new(testenv::tool("crane"))
            .args(["registry", "serve", "--address", "127.0.0.1:0"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("crane registry serve");
        let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let port = lines
            .find_map(|line| {
                let line = line.ok()?;
                line.split("serving on port ")
                    .nth(1)
                    .map(|p| p.trim().to_owned())
            })
            .expect("the registry's port");
        // Keep reading its log, so that it never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Registry {
            child,
            address: format!("127.0.0.1:{port}"),
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn crane(args: &[&str]) -> Output {
    Command::new(testenv::tool("crane"))
        .arg("--insecure")
        .args(args)
        .output()
        .expect("crane runs")
}

fn crane_json(args: &[&str]) -> Value {
    let output = crane(args);
    assert!(output.status.success(), "crane {args:?}: {}", said(&output));
    serde_json::from_slice(&output.stdout).expect("JSON")
}

/// The final stage of the Dockerfile: its instructions after the last FROM, by keyword.
fn dockerfile_final_stage() -> (String, BTreeMap<String, Vec<String>>) {
    let text = read("Dockerfile").replace("\\\n", " ");
    let stage = text.rsplit_once("\nFROM ").expect("a FROM").1;
    let mut lines = stage.lines();
    let base = lines.next().expect("the base").trim().to_owned();
    let mut instructions: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in lines {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (keyword, rest) = line.split_once(' ').expect("KEYWORD args");
        instructions
            .entry(keyword.to_owned())
            .or_default()
            .push(rest.trim().to_owned());
    }
    (base, instructions)
}

#[test]
fn the_release_targets_publish_sboms_checksums_a_scratch_image_and_the_chart() {
    let built = built();
    assert!(built.output.status.success(), "{}", said(&built.output));
    let dist = &built.dist;
    let registry = Registry::start();
    let image = format!(
        "{}/pod-webhook-tracker/pod-webhook-tracker",
        registry.address
    );
    let chart_repo = format!("oci://{}/charts", registry.address);
    let settings = [
        format!("VERSION={VERSION}"),
        format!("IMAGE={image}"),
        format!("CHART_REPO={chart_repo}"),
        "CRANE_FLAGS=--insecure".to_owned(),
        "HELM_PUSH_FLAGS=--plain-http".to_owned(),
    ];
    let run = |targets: &[&str]| {
        let mut args: Vec<&str> = targets.to_vec();
        args.extend(settings.iter().map(String::as_str));
        let output = make(&args, dist);
        assert!(
            output.status.success(),
            "make {targets:?}: {}",
            said(&output)
        );
        stdout(&output)
    };

    // The SBOMs: SPDX, listing every crate linked into the binary at its Cargo.lock version
    // (read from the list cargo auditable embeds) and nothing outside its dependencies.
    run(&["sbom", "chart"]);
    for (arch, _, _) in &built.built {
        let file = dist.join(format!("{NAME}-{VERSION}-linux-{arch}.spdx.json"));
        let sbom: Value =
            serde_json::from_str(&std::fs::read_to_string(&file).expect("the SBOM")).expect("JSON");
        assert!(
            sbom["spdxVersion"]
                .as_str()
                .is_some_and(|v| v.starts_with("SPDX-2")),
            "{arch}"
        );
        let listed: BTreeSet<(String, String)> = sbom["packages"]
            .as_array()
            .expect("packages")
            .iter()
            .filter_map(|p| {
                Some((
                    p["name"].as_str()?.to_owned(),
                    p["versionInfo"].as_str()?.to_owned(),
                ))
            })
            // The SBOM's subject: the binary, named by the release.
            .filter(|crate_| *crate_ != (NAME.to_owned(), VERSION.to_owned()))
            .collect();
        let target = ARCHES
            .iter()
            .find(|(a, _, _)| a == arch)
            .expect("an architecture")
            .1;
        let (code, graph) = linked_crates(target);
        let missing: Vec<_> = code.difference(&listed).collect();
        assert!(
            missing.is_empty(),
            "{arch}: crates in the binary missing from the SBOM: {missing:?}"
        );
        let foreign: Vec<_> = listed.difference(&graph).collect();
        assert!(
            foreign.is_empty(),
            "{arch}: the SBOM lists crates outside the binary's dependencies: {foreign:?}"
        );
        assert!(code.len() >= 100, "{arch}: {} crates", code.len());
    }

    // The checksums cover every release file and verify.
    run(&["checksums"]);
    let sums = dist.join(format!("{NAME}-{VERSION}-sha256sums.txt"));
    let listed: BTreeSet<String> = std::fs::read_to_string(&sums)
        .expect("the checksums")
        .lines()
        .map(|line| line.split_whitespace().nth(1).expect("a file").to_owned())
        .collect();
    let mut expected = BTreeSet::from([format!("{NAME}-{}.tgz", env!("CARGO_PKG_VERSION"))]);
    for (arch, _, _) in &built.built {
        expected.insert(format!("{NAME}-{VERSION}-linux-{arch}.tar.gz"));
        expected.insert(format!("{NAME}-{VERSION}-linux-{arch}.spdx.json"));
    }
    assert_eq!(listed, expected);
    let check = Command::new("sha256sum")
        .args(["--check", "--strict"])
        .arg(&sums)
        .current_dir(dist)
        .output()
        .expect("sha256sum runs");
    assert!(check.status.success(), "{}", said(&check));

    // The image: an index of one manifest per built architecture.
    let pushed = run(&["image-push"]);
    let reference = format!("{image}:{VERSION}");
    assert!(
        pushed.contains(&format!("image-push: {reference}@sha256:")),
        "{pushed}"
    );
    let index = crane_json(&["manifest", &reference]);
    assert_eq!(
        index["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    let platforms: BTreeSet<String> = index["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .map(|m| {
            format!(
                "{}/{}",
                m["platform"]["os"].as_str().unwrap_or("?"),
                m["platform"]["architecture"].as_str().unwrap_or("?")
            )
        })
        .collect();
    let wanted: BTreeSet<String> = built
        .built
        .iter()
        .map(|(arch, _, _)| format!("linux/{arch}"))
        .collect();
    assert_eq!(platforms, wanted);

    // Each configured as the Dockerfile's final stage: FROM scratch, its user, entrypoint,
    // command and ports; its files the binary (byte for byte the tarball's) and the licenses.
    let (base, stage) = dockerfile_final_stage();
    assert_eq!(base, "scratch", "the Dockerfile's final stage");
    let json_list = |keyword: &str| -> Value {
        serde_json::from_str(&stage[keyword][0]).unwrap_or_else(|e| panic!("{keyword}: {e}"))
    };
    let copied: BTreeSet<String> = stage["COPY"]
        .iter()
        .map(|copy| {
            copy.split_whitespace()
                .last()
                .expect("a destination")
                .trim_start_matches('/')
                .to_owned()
        })
        .collect();
    for (arch, _, _) in &built.built {
        let platform = format!("linux/{arch}");
        let config = crane_json(&["config", &reference, "--platform", &platform]);
        assert_eq!(config["architecture"], *arch);
        assert_eq!(config["os"], "linux");
        assert_eq!(
            config["rootfs"]["diff_ids"].as_array().map(Vec::len),
            Some(1),
            "one layer, no base"
        );
        let c = &config["config"];
        assert_eq!(c["User"], stage["USER"][0].as_str());
        assert_eq!(c["Entrypoint"], json_list("ENTRYPOINT"));
        assert_eq!(c["Cmd"], json_list("CMD"));
        let ports: BTreeSet<&str> = stage["EXPOSE"][0].split_whitespace().collect();
        let exposed: BTreeSet<&str> = c["ExposedPorts"]
            .as_object()
            .expect("ports")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(exposed, ports);
        assert_eq!(c["Labels"]["org.opencontainers.image.version"], VERSION);

        let dir = scratch(&format!("image-{arch}"));
        let filesystem = dir.join("filesystem.tar");
        let export = crane(&[
            "export",
            &reference,
            filesystem.to_str().expect("a path"),
            "--platform",
            &platform,
        ]);
        assert!(export.status.success(), "{}", said(&export));
        let files = tar_listing(&filesystem, false);
        let regular: BTreeSet<String> = files
            .iter()
            .filter(|(_, mode)| mode.starts_with('-'))
            .map(|(path, _)| path.clone())
            .collect();
        let doc = format!("usr/share/doc/{NAME}");
        assert_eq!(
            regular,
            BTreeSet::from([
                NAME.to_owned(),
                format!("{doc}/LICENSE"),
                format!("{doc}/THIRD-PARTY-LICENSES")
            ]),
            "{platform}: {files:?}"
        );
        assert!(
            copied.is_subset(&regular),
            "the Dockerfile's files {copied:?} are in the image"
        );
        assert!(files[NAME].starts_with("-rwxr-xr-x 0/0"), "{}", files[NAME]);
        let in_image = extract(&filesystem, false, NAME, &dir.join("image"));
        let in_tarball = extract(&tarball(dist, arch), true, NAME, &dir.join("tarball"));
        assert!(
            std::fs::read(&in_image).expect("image binary")
                == std::fs::read(&in_tarball).expect("tarball binary"),
            "{platform}: the image holds the released binary"
        );
    }
    // The same binaries and commit push the same image.
    let digest = stdout(&crane(&["digest", &reference])).trim().to_owned();
    run(&["image-push"]);
    assert_eq!(
        stdout(&crane(&["digest", &reference])).trim(),
        digest,
        "reproducible"
    );

    // The chart: an OCI artifact of this version; the digest helm reports (which the workflow
    // signs) is the registry's.
    let pushed = run(&["chart-push"]);
    let digest = pushed
        .lines()
        .find_map(|line| line.strip_prefix("Digest: "))
        .unwrap_or_else(|| panic!("helm push reports no digest: {pushed}"))
        .trim()
        .to_owned();
    let chart = format!(
        "{}/charts/{NAME}:{}",
        registry.address,
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(stdout(&crane(&["digest", &chart])).trim(), digest);
    let printed = Command::new("make")
        .args(["-s", "print-chart", &format!("CHART_REPO={chart_repo}")])
        .current_dir(root())
        .output()
        .expect("make runs");
    assert_eq!(
        format!("{}:{}", stdout(&printed).trim(), env!("CARGO_PKG_VERSION")),
        chart,
        "what the workflow signs"
    );
    let shown = Command::new(testenv::tool("helm"))
        .args([
            "show",
            "chart",
            &format!("{chart_repo}/{NAME}"),
            "--version",
            env!("CARGO_PKG_VERSION"),
            "--plain-http",
        ])
        .output()
        .expect("helm runs");
    assert!(shown.status.success(), "{}", said(&shown));
    let shown = stdout(&shown);
    assert!(
        shown.contains(&format!("\nversion: {}\n", env!("CARGO_PKG_VERSION"))),
        "{shown}"
    );
    assert!(
        shown.contains(&format!("appVersion: {VERSION}\n")),
        "{shown}"
    );
}
