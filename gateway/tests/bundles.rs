//! The bundle loader, `countersign eval`, `countersign bundle build` and signed bundles.
//! Fixture bundles and keys are generated per test in temporary directories; the CLI is driven
//! through the real binary.
#![forbid(unsafe_code)]

use std::{
    io::Read,
    path::{Path, PathBuf},
    process::{Command, Output},
};

use countersign::{
    config::PolicyConfig,
    policy::{
        Bundle, LoadOptions, PolicyError, SignaturePolicy,
        signing::{SignatureError, SigningAlgorithm, VerificationConfig},
    },
};
use serde_json::{Value, json};

const POLICY: &str = "package app\n\ndefault allow := false\n\nallow if input.user in data.app.users\n\nlimit := data.shared.limits.daily\n";
const LIBRARY: &str = "package shared.lib\n\ndouble(x) := x * 2\n";
const LEGACY_V0: &str = "package legacy\n\nallow {\n    input.user == \"root\"\n}\n";

fn write(root: &Path, relative: &str, content: &str) {
    let path = root.join(relative);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
}

/// A bundle with two roots, JSON and YAML data, a manifest and a file the loader ignores.
fn fixture(root: &Path) {
    write(
        root,
        ".manifest",
        r#"{"revision": "rev-42", "roots": ["app", "shared"], "rego_version": 1, "metadata": {"team": "payments"}}"#,
    );
    write(root, "app/policy.rego", POLICY);
    write(root, "app/data.json", r#"{"users": ["alice", "bob"]}"#);
    write(root, "shared/lib.rego", LIBRARY);
    write(
        root,
        "shared/limits/data.yaml",
        "daily: 5000\ncurrencies:\n  - EUR\n  - USD\n",
    );
    write(root, "README.md", "not part of the policy\n");
}

fn countersign(arguments: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_countersign"))
        .args(arguments)
        .output()
        .expect("run countersign")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn path_arg(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Entries of a `.tar.gz` as (name, content), in archive order.
fn archive_entries(path: &Path) -> Vec<(String, Vec<u8>)> {
    let file = std::fs::File::open(path).unwrap();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    archive
        .entries()
        .unwrap()
        .map(|entry| {
            let mut entry = entry.unwrap();
            let name = String::from_utf8(entry.path_bytes().into_owned()).unwrap();
            let mut content = Vec::new();
            entry.read_to_end(&mut content).unwrap();
            (name, content)
        })
        .collect()
}

/// Writes entries as a `.tar.gz` (names as given, so a test can craft odd ones).
fn write_archive(path: &Path, entries: &[(&str, &[u8])]) {
    let file = std::fs::File::create(path).unwrap();
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
        file,
        flate2::Compression::fast(),
    ));
    for (name, content) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        let bytes = name.as_bytes();
        header.as_gnu_mut().unwrap().name[..bytes.len()].copy_from_slice(bytes);
        header.set_cksum();
        builder.append(&header, *content).unwrap();
    }
    builder.into_inner().unwrap().finish().unwrap();
}

/// Unpacks an archive into a directory (entries are `/`-rooted, as OPA writes them).
fn unpack(archive: &Path, directory: &Path) {
    for (name, content) in archive_entries(archive) {
        let path = directory.join(name.trim_start_matches('/'));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
}

fn build(source: &Path, output: &Path, extra: &[&str]) {
    let mut arguments = vec!["bundle", "build", path_arg(source), "-o", path_arg(output)];
    arguments.extend_from_slice(extra);
    let result = countersign(&arguments);
    assert!(
        result.status.success(),
        "bundle build failed: {}",
        String::from_utf8_lossy(&result.stderr)
    );
}

struct KeyPair {
    private_pem: String,
    public_pem: String,
}

fn rsa_key() -> KeyPair {
    use aws_lc_rs::{encoding::AsDer, signature::KeyPair as _};
    let key = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
    let private: aws_lc_rs::encoding::Pkcs8V1Der = key.as_der().unwrap();
    let public: aws_lc_rs::encoding::PublicKeyX509Der = key.public_key().as_der().unwrap();
    KeyPair {
        private_pem: pem::encode(&pem::Pem::new("PRIVATE KEY", private.as_ref())),
        public_pem: pem::encode(&pem::Pem::new("PUBLIC KEY", public.as_ref())),
    }
}

fn ec_key() -> KeyPair {
    let key = rcgen::KeyPair::generate().unwrap();
    KeyPair {
        private_pem: key.serialize_pem(),
        public_pem: key.public_key_pem(),
    }
}

fn verify_with(key: &KeyPair, algorithm: SigningAlgorithm, scope: Option<&str>) -> LoadOptions {
    LoadOptions {
        v0_compatible: false,
        signatures: SignaturePolicy::Verify(
            VerificationConfig::new(
                key.public_pem.as_bytes(),
                algorithm,
                None,
                scope.map(str::to_owned),
            )
            .unwrap(),
        ),
    }
}

#[test]
fn directory_and_archive_load_the_same() {
    let temp = tempfile::tempdir().unwrap();
    let source = temp.path().join("src");
    fixture(&source);
    let archive = temp.path().join("bundle.tar.gz");
    build(&source, &archive, &[]);

    let from_directory = Bundle::load(&source).unwrap();
    let from_archive = Bundle::load(&archive).unwrap();
    assert_eq!(from_directory.revision, "rev-42");
    assert_eq!(from_archive.revision, from_directory.revision);
    assert_eq!(from_archive.modules, from_directory.modules);
    assert_eq!(from_archive.data, from_directory.data);
    assert_eq!(
        from_directory.data,
        json!({"app": {"users": ["alice", "bob"]},
               "shared": {"limits": {"daily": 5000, "currencies": ["EUR", "USD"]}}})
    );
    assert_eq!(
        from_archive.manifest.normalized_roots(),
        from_directory.manifest.normalized_roots()
    );
    assert_eq!(from_archive.manifest.metadata["team"], "payments");

    // Both evaluate the same through `eval`.
    let input = temp.path().join("input.json");
    std::fs::write(&input, r#"{"user": "bob"}"#).unwrap();
    for path in [&source, &archive] {
        let output = countersign(&[
            "eval",
            "-d",
            path_arg(path),
            "-i",
            path_arg(&input),
            "data.app.allow",
        ]);
        assert!(output.status.success(), "{}", stdout(&output));
        let document: Value = serde_json::from_str(&stdout(&output)).unwrap();
        assert_eq!(document["result"][0]["expressions"][0]["value"], true);
    }
}

#[test]
fn archives_with_dot_slash_names_load_and_dot_dot_is_refused() {
    let temp = tempfile::tempdir().unwrap();
    let plain = temp.path().join("plain.tar.gz");
    write_archive(
        &plain,
        &[
            (
                "./app/policy.rego",
                "package app\n\nallow := true\n".as_bytes(),
            ),
            ("app/data.json", br#"{"x": 1}"#),
        ],
    );
    let bundle = Bundle::load(&plain).unwrap();
    assert_eq!(bundle.modules[0].path, "app/policy.rego");
    assert_eq!(bundle.data, json!({"app": {"x": 1}}));

    let evil = temp.path().join("evil.tar.gz");
    write_archive(&evil, &[("/../escape.rego", b"package escape\n")]);
    let error = Bundle::load(&evil).unwrap_err().to_string();
    assert!(error.contains(".."), "{error}");

    let twice = temp.path().join("twice.tar.gz");
    write_archive(
        &twice,
        &[("/a.rego", b"package a\n"), ("a.rego", b"package a\n")],
    );
    let error = Bundle::load(&twice).unwrap_err().to_string();
    assert!(error.contains("twice"), "{error}");

    let not_gzip = temp.path().join("not.tar.gz");
    std::fs::write(&not_gzip, b"plain text").unwrap();
    assert!(Bundle::load(&not_gzip).is_err());
}

#[test]
fn manifest_revision_roots_and_rego_version_are_honoured() {
    let temp = tempfile::tempdir().unwrap();

    // No revision: a content hash stands in, stable across loads.
    let unnamed = temp.path().join("unnamed");
    write(&unnamed, "app/policy.rego", POLICY);
    let first = Bundle::load(&unnamed).unwrap();
    assert!(first.revision.starts_with("sha256:"), "{}", first.revision);
    assert_eq!(Bundle::load(&unnamed).unwrap().revision, first.revision);

    // A package outside the roots.
    let outside = temp.path().join("outside");
    fixture(&outside);
    write(&outside, "other/x.rego", "package other\n\nx := 1\n");
    let error = Bundle::load(&outside).unwrap_err().to_string();
    assert!(
        error.contains("other/x.rego") && error.contains("do not permit package 'other'"),
        "{error}"
    );

    // Data outside the roots.
    let data_outside = temp.path().join("data-outside");
    fixture(&data_outside);
    write(&data_outside, "elsewhere/data.json", r#"{"y": 2}"#);
    let error = Bundle::load(&data_outside).unwrap_err().to_string();
    assert!(error.contains("'/elsewhere'"), "{error}");

    // Overlapping roots.
    let overlap = temp.path().join("overlap");
    write(&overlap, ".manifest", r#"{"roots": ["a", "a/b"]}"#);
    write(&overlap, "a/x.rego", "package a\n\nx := 1\n");
    let error = Bundle::load(&overlap).unwrap_err().to_string();
    assert!(error.contains("overlapped roots"), "{error}");

    // rego_version 0 in the manifest makes every module v0.
    let legacy = temp.path().join("legacy");
    write(&legacy, ".manifest", r#"{"rego_version": 0}"#);
    write(&legacy, "legacy/policy.rego", LEGACY_V0);
    let bundle = Bundle::load(&legacy).unwrap();
    assert!(!bundle.modules[0].rego_v1);
    let mut engine = bundle.interpreter().unwrap();
    engine.set_input(regorus::Value::from(json!({"user": "root"})));
    assert_eq!(
        engine.eval_rule("data.legacy.allow".to_owned()).unwrap(),
        regorus::Value::from(true)
    );
}

#[test]
fn a_v0_module_loads_only_as_v0() {
    let temp = tempfile::tempdir().unwrap();
    let root = temp.path().join("bundle");
    write(&root, "legacy/policy.rego", LEGACY_V0);
    write(&root, "app/policy.rego", POLICY);
    write(&root, "app/data.json", r#"{"users": []}"#);
    write(&root, "shared/limits/data.json", r#"{"daily": 1}"#);

    // As v1 (the default) it is a syntax error, located.
    let error = Bundle::load(&root).unwrap_err().to_string();
    assert!(
        error.contains(&format!("{}:3:", root.join("legacy/policy.rego").display())),
        "{error}"
    );

    // `v0_compatible` (the `--v0-compatible` flag) turns every unversioned module into v0.
    // (OPA would now refuse the v1 module's `if`; regorus 0.14 parses it with a warning.)
    let options = LoadOptions {
        v0_compatible: true,
        ..LoadOptions::default()
    };
    let bundle = Bundle::load_with(&root, &options).unwrap();
    assert!(bundle.modules.iter().all(|module| !module.rego_v1));

    // `file_rego_versions` makes only the legacy file v0 (glob, OPA's `/`-rooted form).
    write(
        &root,
        ".manifest",
        r#"{"rego_version": 1, "file_rego_versions": {"/legacy/*.rego": 0}}"#,
    );
    let bundle = Bundle::load(&root).unwrap();
    let version = |path: &str| {
        bundle
            .modules
            .iter()
            .find(|module| module.path == path)
            .unwrap()
            .rego_v1
    };
    assert!(!version("legacy/policy.rego"));
    assert!(version("app/policy.rego"));

    // A built archive keeps the per-file version and loads the same.
    let archive = temp.path().join("mixed.tar.gz");
    build(&root, &archive, &["--revision", "mixed-1"]);
    let manifest: Value = serde_json::from_slice(
        &archive_entries(&archive)
            .into_iter()
            .find(|(name, _)| name == "/.manifest")
            .unwrap()
            .1,
    )
    .unwrap();
    assert_eq!(manifest["rego_version"], 1);
    assert_eq!(
        manifest["file_rego_versions"],
        json!({"/legacy/policy.rego": 0})
    );
    assert_eq!(Bundle::load(&archive).unwrap().modules, bundle.modules);
}

#[test]
fn errors_name_file_row_and_column() {
    let temp = tempfile::tempdir().unwrap();
    let rego = temp.path().join("rego");
    write(
        &rego,
        "app/bad.rego",
        "package app\n\nallow if {\n    input.x ==\n}\n",
    );
    let error = Bundle::load(&rego).unwrap_err();
    assert!(matches!(error, PolicyError::Invalid(_)), "{error:?}");
    let message = error.to_string();
    let prefix = format!("{}:", rego.join("app/bad.rego").display());
    assert!(message.starts_with(&prefix), "{message}");
    let location: Vec<&str> = message[prefix.len()..].splitn(3, ':').collect();
    assert!(
        location[0].parse::<u32>().unwrap() >= 4 && location[1].parse::<u32>().is_ok(),
        "{message}"
    );

    let json_error = temp.path().join("json");
    write(
        &json_error,
        "app/data.json",
        "{\n  \"a\": 1,\n  \"b\": \n}\n",
    );
    let message = Bundle::load(&json_error).unwrap_err().to_string();
    assert!(message.contains("app/data.json:4:1:"), "{message}");

    let yaml_error = temp.path().join("yaml");
    write(&yaml_error, "app/data.yaml", "a: 1\nb: [1, 2\n");
    let message = Bundle::load(&yaml_error).unwrap_err().to_string();
    assert!(message.contains("app/data.yaml:"), "{message}");

    let manifest_error = temp.path().join("manifest");
    write(&manifest_error, ".manifest", "{\"roots\": [\"a\",]}");
    write(&manifest_error, "a/x.rego", "package a\n");
    let message = Bundle::load(&manifest_error).unwrap_err().to_string();
    assert!(message.contains(".manifest:1:"), "{message}");

    // The CLI reports the same location and exits 2, as `opa eval` on an error.
    let output = countersign(&["eval", "--format", "pretty", "-d", path_arg(&rego), "data"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("app/bad.rego:"), "{stderr}");
}

#[test]
fn eval_prints_opa_shaped_results_and_exit_codes() {
    let temp = tempfile::tempdir().unwrap();
    let root = temp.path().join("bundle");
    fixture(&root);
    let input = temp.path().join("input.json");
    std::fs::write(&input, r#"{"user": "alice"}"#).unwrap();
    let data = path_arg(&root);
    let input_arg = path_arg(&input);

    let output = countersign(&["eval", "-d", data, "-i", input_arg, "data.app.allow"]);
    assert_eq!(output.status.code(), Some(0));
    let document: Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(
        document,
        json!({"result": [{"expressions": [{
            "value": true,
            "text": "data.app.allow",
            "location": {"row": 1, "col": 1}
        }]}]})
    );

    // Bindings, as OPA prints them.
    let output = countersign(&["eval", "-d", data, "x := data.shared.lib.double(21)"]);
    let document: Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(document["result"][0]["bindings"], json!({"x": 42}));
    assert_eq!(document["result"][0]["expressions"][0]["value"], true);

    // Undefined: `{}` and exit 0; with --fail exit 1; defined with --fail-defined exit 1.
    let output = countersign(&["eval", "-d", data, "data.app.missing"]);
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(
        serde_json::from_str::<Value>(&stdout(&output)).unwrap(),
        json!({})
    );
    let output = countersign(&["eval", "--fail", "-d", data, "data.app.missing"]);
    assert_eq!(output.status.code(), Some(1));
    let output = countersign(&["eval", "--fail-defined", "-d", data, "data.app.limit"]);
    assert_eq!(output.status.code(), Some(1));
    let output = countersign(&["eval", "--fail", "-d", data, "data.app.limit"]);
    assert_eq!(output.status.code(), Some(0));

    // Pretty: the value alone.
    let output = countersign(&["eval", "--format", "pretty", "-d", data, "data.app.limit"]);
    assert_eq!(stdout(&output).trim(), "5000");
    let output = countersign(&["eval", "--format", "pretty", "-d", data, "data.app.missing"]);
    assert_eq!(stdout(&output).trim(), "undefined");

    // A query error: exit 2 and OPA's `errors` document.
    let output = countersign(&["eval", "-d", data, "data.app.allow ==="]);
    assert_eq!(output.status.code(), Some(2));
    let document: Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert!(document["errors"][0]["message"].is_string(), "{document}");

    // `-b`, as `opa eval -b`, on the repository's own bundle.
    let policies = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
    let output = countersign(&[
        "eval",
        "-b",
        path_arg(&policies),
        "-f",
        "pretty",
        "count(data.countersign.config) > 0",
    ]);
    assert_eq!(stdout(&output).trim(), "true", "{output:?}");

    // Single files: a module and a data document.
    let module = temp.path().join("extra.rego");
    std::fs::write(&module, "package extra\n\nanswer := data.k * 2\n").unwrap();
    let json_file = temp.path().join("values.json");
    std::fs::write(&json_file, r#"{"k": 21}"#).unwrap();
    let output = countersign(&[
        "eval",
        "-f",
        "pretty",
        "-d",
        path_arg(&module),
        "-d",
        path_arg(&json_file),
        "data.extra.answer",
    ]);
    assert_eq!(stdout(&output).trim(), "42", "{output:?}");
}

#[test]
fn bundle_build_lays_the_archive_out_as_opa_build() {
    let temp = tempfile::tempdir().unwrap();
    let root = temp.path().join("bundle");
    fixture(&root);
    let archive = temp.path().join("out.tar.gz");
    build(&root, &archive, &["--revision", "2026-11-26.7"]);
    let entries = archive_entries(&archive);
    let names: Vec<&str> = entries.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(
        names,
        [
            "/data.json",
            "/app/policy.rego",
            "/shared/lib.rego",
            "/.manifest"
        ]
    );
    let manifest: Value = serde_json::from_slice(&entries[3].1).unwrap();
    assert_eq!(
        manifest,
        json!({"revision": "2026-11-26.7", "roots": ["app", "shared"], "rego_version": 1,
               "metadata": {"team": "payments"}})
    );
    let data: Value = serde_json::from_slice(&entries[0].1).unwrap();
    assert_eq!(data, Bundle::load(&root).unwrap().data);
    assert_eq!(Bundle::load(&archive).unwrap().revision, "2026-11-26.7");

    // Builds are reproducible.
    let again = temp.path().join("again.tar.gz");
    build(&root, &again, &["--revision", "2026-11-26.7"]);
    assert_eq!(
        std::fs::read(&archive).unwrap(),
        std::fs::read(&again).unwrap()
    );
}

#[test]
fn signed_bundles_verify_with_rs256_and_es256() {
    let temp = tempfile::tempdir().unwrap();
    let root = temp.path().join("bundle");
    fixture(&root);
    for (name, key, algorithm) in [
        ("RS256", rsa_key(), SigningAlgorithm::Rs256),
        ("ES256", ec_key(), SigningAlgorithm::Es256),
    ] {
        let key_file = temp.path().join(format!("{name}.key"));
        std::fs::write(&key_file, &key.private_pem).unwrap();
        let archive = temp.path().join(format!("{name}.tar.gz"));
        build(
            &root,
            &archive,
            &[
                "--signing-key",
                path_arg(&key_file),
                "--signing-alg",
                name,
                "--signing-key-id",
                "release",
            ],
        );
        let entries = archive_entries(&archive);
        let names: Vec<&str> = entries.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(
            names,
            [
                "/data.json",
                "/app/policy.rego",
                "/shared/lib.rego",
                "/.signatures.json",
                "/.manifest"
            ]
        );
        // The JWT payload lists every other file with its SHA-256, names without the `/`.
        let signatures: Value = serde_json::from_slice(&entries[3].1).unwrap();
        let token = signatures["signatures"][0].as_str().unwrap();
        let header = jwt_part(token, 0);
        assert_eq!(header["alg"], name);
        assert_eq!(header["kid"], "release");
        let payload = jwt_part(token, 1);
        let mut files: Vec<&str> = payload["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|file| {
                assert_eq!(file["algorithm"], "SHA-256");
                file["name"].as_str().unwrap()
            })
            .collect();
        files.sort_unstable();
        assert_eq!(
            files,
            [
                ".manifest",
                "app/policy.rego",
                "data.json",
                "shared/lib.rego"
            ]
        );
        assert_eq!(payload["keyid"], "release");

        let options = verify_with(&key, algorithm, None);
        let bundle = Bundle::load_with(&archive, &options).unwrap();
        assert_eq!(bundle.revision, "rev-42");
        // The same files as a directory verify too.
        let unpacked = temp.path().join(format!("{name}-dir"));
        unpack(&archive, &unpacked);
        Bundle::load_with(&unpacked, &options).unwrap();

        // `eval` verifies with --verification-key and refuses a signed bundle without one.
        let public_file = temp.path().join(format!("{name}.pub"));
        std::fs::write(&public_file, &key.public_pem).unwrap();
        let output = countersign(&[
            "eval",
            "--verification-key",
            path_arg(&public_file),
            "--verification-alg",
            name,
            "-d",
            path_arg(&archive),
            "data.app.limit",
        ]);
        assert_eq!(output.status.code(), Some(0), "{output:?}");
        let output = countersign(&["eval", "-d", path_arg(&archive), "data.app.limit"]);
        assert_eq!(output.status.code(), Some(2));
        assert!(
            stdout(&output).contains("no verification key"),
            "{output:?}"
        );
        let output = countersign(&[
            "eval",
            "--skip-verify",
            "-d",
            path_arg(&archive),
            "data.app.limit",
        ]);
        assert_eq!(output.status.code(), Some(0));
    }
}

fn jwt_part(token: &str, index: usize) -> Value {
    serde_json::from_slice(&base64_decode(token.split('.').nth(index).unwrap())).unwrap()
}

/// Base64url without padding (a JWT part), decoded without another dependency.
fn base64_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut bits = 0_u32;
    let mut count = 0;
    let mut out = Vec::new();
    for byte in text.bytes() {
        let value = ALPHABET.iter().position(|&c| c == byte).unwrap() as u32;
        bits = (bits << 6) | value;
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
            bits &= (1 << count) - 1;
        }
    }
    out
}

#[test]
fn tampered_unsigned_wrong_key_and_wrong_algorithm_are_refused() {
    let temp = tempfile::tempdir().unwrap();
    let root = temp.path().join("bundle");
    fixture(&root);
    let key = rsa_key();
    let key_file = temp.path().join("signing.key");
    std::fs::write(&key_file, &key.private_pem).unwrap();
    let archive = temp.path().join("signed.tar.gz");
    build(&root, &archive, &["--signing-key", path_arg(&key_file)]);
    let options = verify_with(&key, SigningAlgorithm::Rs256, None);
    Bundle::load_with(&archive, &options).unwrap();

    let signature_error =
        |path: &Path, options: &LoadOptions| match Bundle::load_with(path, options) {
            Err(PolicyError::Signature(error)) => error,
            other => panic!("expected a signature error, got {other:?}"),
        };
    let fresh_copy = |name: &str| -> PathBuf {
        let directory = temp.path().join(name);
        unpack(&archive, &directory);
        directory
    };

    // A tampered module.
    let tampered = fresh_copy("tampered");
    write(
        &tampered,
        "app/policy.rego",
        &POLICY.replace("false", "true"),
    );
    let error = signature_error(&tampered, &options);
    assert!(
        matches!(&error, SignatureError::Digest { name, .. } if name == "app/policy.rego"),
        "{error}"
    );

    // Tampered data: a changed value fails, a reformatted file (same JSON) still verifies.
    let reformatted = fresh_copy("reformatted");
    let data: Value =
        serde_json::from_slice(&std::fs::read(reformatted.join("data.json")).unwrap()).unwrap();
    std::fs::write(
        reformatted.join("data.json"),
        serde_json::to_string_pretty(&data).unwrap(),
    )
    .unwrap();
    Bundle::load_with(&reformatted, &options).unwrap();
    let changed = fresh_copy("changed");
    let text = std::fs::read_to_string(changed.join("data.json")).unwrap();
    std::fs::write(changed.join("data.json"), text.replace("5000", "9000")).unwrap();
    assert!(matches!(
        signature_error(&changed, &options),
        SignatureError::Digest { name, .. } if name == "data.json"
    ));

    // An extra file, and a missing one.
    let extra = fresh_copy("extra");
    write(
        &extra,
        "app/backdoor.rego",
        "package app\n\nbackdoor := true\n",
    );
    assert!(matches!(
        signature_error(&extra, &options),
        SignatureError::Unlisted(name) if name == "app/backdoor.rego"
    ));
    let missing = fresh_copy("missing");
    std::fs::remove_file(missing.join("shared/lib.rego")).unwrap();
    assert!(matches!(
        signature_error(&missing, &options),
        SignatureError::Missing(names) if names == ["shared/lib.rego"]
    ));

    // A wrong key, and the right key with the wrong algorithm.
    let other = rsa_key();
    assert!(matches!(
        signature_error(
            &archive,
            &verify_with(&other, SigningAlgorithm::Rs256, None)
        ),
        SignatureError::BadSignature(_)
    ));
    let ec = ec_key();
    assert!(matches!(
        signature_error(&archive, &verify_with(&ec, SigningAlgorithm::Es256, None)),
        SignatureError::BadSignature(_)
    ));

    // A scope the signature does not carry.
    assert!(matches!(
        signature_error(
            &archive,
            &verify_with(&key, SigningAlgorithm::Rs256, Some("write"))
        ),
        SignatureError::Scope { .. }
    ));
    let claims = temp.path().join("claims.json");
    std::fs::write(&claims, r#"{"scope": "write", "iss": "release-pipeline"}"#).unwrap();
    let scoped = temp.path().join("scoped.tar.gz");
    build(
        &root,
        &scoped,
        &[
            "--signing-key",
            path_arg(&key_file),
            "--claims-file",
            path_arg(&claims),
        ],
    );
    Bundle::load_with(
        &scoped,
        &verify_with(&key, SigningAlgorithm::Rs256, Some("write")),
    )
    .unwrap();

    // Unsigned, with verification configured.
    let unsigned = temp.path().join("unsigned.tar.gz");
    build(&root, &unsigned, &[]);
    assert!(matches!(
        signature_error(&unsigned, &options),
        SignatureError::Unsigned
    ));
    assert!(matches!(
        signature_error(&root, &options),
        SignatureError::Unsigned
    ));

    // A corrupt signatures file.
    let corrupt = fresh_copy("corrupt");
    std::fs::write(corrupt.join(".signatures.json"), r#"{"signatures": []}"#).unwrap();
    assert!(matches!(
        signature_error(&corrupt, &options),
        SignatureError::Malformed(_)
    ));
}

#[test]
fn serve_configuration_requires_the_signature() {
    let temp = tempfile::tempdir().unwrap();
    let root = temp.path().join("bundle");
    fixture(&root);
    let key = ec_key();
    let key_file = temp.path().join("signing.key");
    std::fs::write(&key_file, &key.private_pem).unwrap();
    let public_file = temp.path().join("signing.pub");
    std::fs::write(&public_file, &key.public_pem).unwrap();
    let signed = temp.path().join("signed.tar.gz");
    build(
        &root,
        &signed,
        &[
            "--signing-key",
            path_arg(&key_file),
            "--signing-alg",
            "ES256",
        ],
    );
    let unsigned = temp.path().join("unsigned.tar.gz");
    build(&root, &unsigned, &[]);

    let configured = |bundle: &Path, verification: bool| PolicyConfig {
        verification_key: verification.then(|| public_file.clone()),
        verification_alg: verification.then(|| "ES256".to_owned()),
        ..PolicyConfig::new(bundle.to_owned())
    };
    Bundle::load_configured(&configured(&signed, true)).unwrap();
    let error = Bundle::load_configured(&configured(&unsigned, true)).unwrap_err();
    assert!(error.to_string().contains("not signed"), "{error}");
    // Without a key, a signed bundle is refused (someone meant it to be checked), as in OPA.
    let error = Bundle::load_configured(&configured(&signed, false)).unwrap_err();
    assert!(error.to_string().contains("no verification key"), "{error}");
    Bundle::load_configured(&configured(&unsigned, false)).unwrap();
    // The repository's own bundle loads as `serve` loads it.
    Bundle::load_configured(&PolicyConfig::new(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies"),
    ))
    .unwrap();
}

/// A bundle signed by OPA's own Go engine (OPA 1.x via the `opa-golib-python-bindings` wheel:
/// `io.jwt.encode_sign` with ES256, every digest computed by OPA builtins — `crypto.sha256` over
/// the raw `.rego`, over `json.marshal(json.unmarshal(file))` for `data.json` and `.manifest`).
/// The data file is pretty-printed with `1.50`, `1e3` and a `\u00f6` escape on purpose.
#[test]
fn a_bundle_signed_by_opa_verifies() {
    const PUBLIC_KEY: &str = r#"-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEl458ApwSOc1qF0sR6cNW0AUgNffa
TLRjgm44HspscIsmxpkcSb6dHB6fk6Upha6jNectCCLBw6KixtCWICr1MQ==
-----END PUBLIC KEY-----
"#;
    const TOKEN: &str = r#"eyJhbGciOiJFUzI1NiIsImtpZCI6Im9wYS1rZXkifQ.eyJmaWxlcyI6W3siYWxnb3JpdGhtIjoiU0hBLTI1NiIsImhhc2giOiI1ZDBlYzQ5YTFkZTQ5NWQ1ZDM3OTgzOGU0ZGM4ODI2NmMxMWExYTY3OTIwY2FkN2FlMTliZjdjMGQ2ODJhZDQ0IiwibmFtZSI6Ii5tYW5pZmVzdCJ9LHsiYWxnb3JpdGhtIjoiU0hBLTI1NiIsImhhc2giOiIxMDFjOTJhMmRiYjBjYmVjNDE4ZjQ3YWZmMzg5N2VhZTI0MTQ3MjVlMzQ3ODJiOGNkOWQ4NmNhNjQyNTM0NjRmIiwibmFtZSI6ImFwcC9kYXRhLmpzb24ifSx7ImFsZ29yaXRobSI6IlNIQS0yNTYiLCJoYXNoIjoiZjgxNDQ2YTE0YmYxZjI5YjExMGQ2MjE0Y2ZiODZkMzAzNjM5N2JlYzQzODVjYTY2Yzc0NmU0Mzc5Y2IxZWNhZiIsIm5hbWUiOiJhcHAvcG9saWN5LnJlZ28ifV0sInNjb3BlIjoicmVhZCJ9.RtW1B5XWcohI8k-gxl-0lkYgGq592nVLrEH-7YXupaCI-P6YjjVozP0uVN0p984qATgp_mHG4eSSotxyZOQBfQ"#;
    const MANIFEST: &str = r#"{"revision": "opa-signed-1", "roots": ["app"]}"#;
    const POLICY_FILE: &str = r#"package app

allow if input.user in data.app.users
"#;
    const DATA_FILE: &str = r#"{"users": ["alice", "b\u00f6b"],
 "limit": 1.50, "big": 1e3, "z": {"b": 1, "a": [true, null]}}
"#;
    let temp = tempfile::tempdir().unwrap();
    let root = temp.path().join("bundle");
    write(&root, ".manifest", MANIFEST);
    write(&root, "app/policy.rego", POLICY_FILE);
    write(&root, "app/data.json", DATA_FILE);
    write(
        &root,
        ".signatures.json",
        &json!({ "signatures": [TOKEN] }).to_string(),
    );
    let key = KeyPair {
        private_pem: String::new(),
        public_pem: PUBLIC_KEY.to_owned(),
    };
    let bundle = Bundle::load_with(
        &root,
        &verify_with(&key, SigningAlgorithm::Es256, Some("read")),
    )
    .unwrap();
    assert_eq!(bundle.revision, "opa-signed-1");
    assert_eq!(bundle.data["app"]["users"][1], "b\u{f6}b");
    // Its scope is part of what is signed.
    let error =
        Bundle::load_with(&root, &verify_with(&key, SigningAlgorithm::Es256, None)).unwrap_err();
    assert!(error.to_string().contains("scope"), "{error}");
    // One changed number in the data is a digest mismatch.
    write(&root, "app/data.json", &DATA_FILE.replace("1.50", "1.51"));
    let error = Bundle::load_with(
        &root,
        &verify_with(&key, SigningAlgorithm::Es256, Some("read")),
    )
    .unwrap_err();
    assert!(
        error.to_string().contains("app/data.json: digest mismatch"),
        "{error}"
    );
}
