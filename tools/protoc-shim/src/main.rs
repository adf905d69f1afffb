//! A stand-in for `protoc` in the one mode build scripts use (prost-build's
//! `--include_imports --include_source_info -o FILE -I DIR... FILE.proto...`): it compiles
//! the files with protox (pure Rust) and writes the descriptor set. The project has no system
//! `protoc`; dependencies that run one in their build script (etcd-client) get this through
//! `PROTOC` (`.cargo/config.toml`, `tools/protoc`).

use std::process::ExitCode;

fn main() -> ExitCode {
    match run(std::env::args().skip(1).collect()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("protoc (protox shim): {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Vec<String>) -> Result<(), String> {
    let mut out = None;
    let mut includes = Vec::new();
    let mut files = Vec::new();
    let mut imports = false;
    let mut source_info = false;
    let mut args = args.into_iter();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--version" => {
                println!("libprotoc 3.21.12 (protox shim)");
                return Ok(());
            }
            "--include_imports" => imports = true,
            "--include_source_info" => source_info = true,
            "-o" => out = Some(args.next().ok_or("-o needs a file")?),
            "-I" => includes.push(args.next().ok_or("-I needs a directory")?),
            _ if a.starts_with("--descriptor_set_out=") => {
                out = Some(a["--descriptor_set_out=".len()..].to_owned())
            }
            _ if a.starts_with("--proto_path=") => {
                includes.push(a["--proto_path=".len()..].to_owned())
            }
            _ if a.starts_with("-I") => includes.push(a[2..].to_owned()),
            // Accepted by protoc 3.12 to 3.14; on by default since.
            "--experimental_allow_proto3_optional" => {}
            _ if a.starts_with('-') => return Err(format!("unsupported option {a}")),
            _ => files.push(a),
        }
    }
    let out = out.ok_or("only descriptor-set output (-o FILE) is supported")?;
    if includes.is_empty() {
        includes.push(".".to_owned());
    }
    let mut compiler = protox::Compiler::new(&includes).map_err(|e| e.to_string())?;
    compiler
        .include_imports(imports)
        .include_source_info(source_info);
    for f in &files {
        compiler.open_file(f).map_err(|e| format!("{f}: {e}"))?;
    }
    std::fs::write(&out, compiler.encode_file_descriptor_set()).map_err(|e| format!("{out}: {e}"))
}
